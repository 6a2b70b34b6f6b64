"""Errors with stable codes: the vocabulary every client sees, in acks and HTTP answers alike.

The edge (server/errors.py) turns them into ``{"code", "message", "retryable"}`` acks and HTTP
responses; nothing else decides what a client is told.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    PERMISSION_DENIED = "permission_denied"
    UNKNOWN_CHANNEL = "unknown_channel"
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNRECOVERABLE_POSITION = "unrecoverable_position"
    INSUFFICIENT_STATE = "insufficient_state"
    SLOW = "slow"
    BAD_REQUEST = "bad_request"
    SHUTDOWN = "shutdown"
    BROKER_UNAVAILABLE = "broker_unavailable"
    INTERNAL = "internal"
    # Server notices of an operator's actions (the admin API); never an ack's error.
    DISCONNECTED_BY_ADMIN = "disconnected_by_admin"
    UNSUBSCRIBED_BY_ADMIN = "unsubscribed_by_admin"
    TOKEN_REVOKED = "token_revoked"


class DomainError(Exception):
    """Base of every error a client may be shown; ``message`` says how to fix it."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(DomainError):
    code = ErrorCode.UNAUTHORIZED


class TokenExpired(DomainError):
    code = ErrorCode.TOKEN_EXPIRED


class TokenRevoked(DomainError):
    """The token was issued before a revocation of its user's tokens."""

    code = ErrorCode.TOKEN_REVOKED


class PermissionDenied(DomainError):
    code = ErrorCode.PERMISSION_DENIED


class UnknownChannel(DomainError):
    code = ErrorCode.UNKNOWN_CHANNEL


class InvalidPayload(DomainError):
    code = ErrorCode.INVALID_PAYLOAD


class PayloadTooLarge(DomainError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED
    retryable = True

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class Unrecoverable(DomainError):
    """The requested stream position is gone (expired, or from an older epoch)."""

    code = ErrorCode.UNRECOVERABLE_POSITION


class BadRequest(DomainError):
    code = ErrorCode.BAD_REQUEST


class Unavailable(DomainError):
    """A dependency (the broker, the database) is down; the same request may succeed later."""

    code = ErrorCode.BROKER_UNAVAILABLE
    retryable = True
