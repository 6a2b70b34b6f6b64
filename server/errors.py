"""The edge's one mapping from errors to what clients see: acks and HTTP responses."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from domain.errors import DomainError, ErrorCode, RateLimited

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_REVOKED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNKNOWN_CHANNEL: 422,
    ErrorCode.INVALID_PAYLOAD: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNRECOVERABLE_POSITION: 410,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BROKER_UNAVAILABLE: 503,
    ErrorCode.SHUTDOWN: 503,
    ErrorCode.INTERNAL: 500,
}


def error_body(code: ErrorCode, message: str, *, retryable: bool = False) -> dict[str, Any]:
    return {"code": code.value, "message": message, "retryable": retryable}


def error_ack(code: ErrorCode, message: str, *, retryable: bool = False) -> dict[str, Any]:
    return {"ok": False, "error": error_body(code, message, retryable=retryable)}


def domain_error_ack(exc: DomainError) -> dict[str, Any]:
    return error_ack(exc.code, exc.message, retryable=exc.retryable)


def http_error(
    code: ErrorCode, message: str, *, retryable: bool = False, retry_after_s: int = 1
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers of an HTTP error answer; a 503 or 429 says when to retry."""
    status = HTTP_STATUS.get(code, 400)
    headers = {"Retry-After": str(retry_after_s)} if status in (429, 503) else {}
    return status, {"error": error_body(code, message, retryable=retryable)}, headers


def http_domain_error(exc: DomainError) -> tuple[int, dict[str, Any], dict[str, str]]:
    retry_after_s = exc.retry_after_s if isinstance(exc, RateLimited) else 1
    return http_error(exc.code, exc.message, retryable=exc.retryable, retry_after_s=retry_after_s)


def describe_errors(errors: Iterable[Mapping[str, Any]], whole: str) -> str:
    """A one-line summary naming each bad field, e.g. ``channel: Field required``; an error
    about the whole input is named ``whole``."""
    parts = []
    for error in itertools.islice(errors, 5):
        where = ".".join(str(p) for p in error.get("loc", ())) or whole
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def validation_message(exc: ValidationError) -> str:
    return describe_errors(exc.errors(), "payload")
