"""Every wire error code maps to its own exception class."""

from __future__ import annotations

import pytest

import client_sdk
from client_sdk import TandemError, error_class, error_from_body
from domain.errors import DomainError, ErrorCode

WIRE_CODES = {
    "unauthorized": client_sdk.Unauthorized,
    "token_expired": client_sdk.TokenExpired,
    "token_revoked": client_sdk.TokenRevoked,
    "disconnected_by_admin": client_sdk.DisconnectedByAdmin,
    "unsubscribed_by_admin": client_sdk.UnsubscribedByAdmin,
    "permission_denied": client_sdk.PermissionDenied,
    "unknown_channel": client_sdk.UnknownChannel,
    "invalid_payload": client_sdk.InvalidPayload,
    "payload_too_large": client_sdk.PayloadTooLarge,
    "rate_limited": client_sdk.RateLimited,
    "not_found": client_sdk.NotFound,
    "conflict": client_sdk.Conflict,
    "unrecoverable_position": client_sdk.UnrecoverablePosition,
    "insufficient_state": client_sdk.InsufficientState,
    "slow": client_sdk.SlowConsumer,
    "bad_request": client_sdk.BadRequest,
    "shutdown": client_sdk.Shutdown,
    "broker_unavailable": client_sdk.Unavailable,
    "internal": client_sdk.InternalError,
}


@pytest.mark.parametrize(("code", "cls"), WIRE_CODES.items())
def test_each_code_has_its_class(code: str, cls: type[TandemError]) -> None:
    assert error_class(code) is cls
    error = error_from_body({"code": code, "message": "why", "retryable": True})
    assert type(error) is cls
    assert (error.code, error.message, error.retryable) == (code, "why", True)
    assert isinstance(error, TandemError)
    assert str(error) == "why"


def test_the_sdk_knows_every_code_the_server_sends() -> None:
    # Compared with the server's own list, so a code added to one side cannot be forgotten.
    assert set(WIRE_CODES) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        assert error_class(code.value) is not TandemError, code


def _domain_errors(cls: type[DomainError]) -> list[type[DomainError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _domain_errors(child))]


def test_the_sdk_says_retryable_where_the_server_does() -> None:
    # The errors of the wire vocabulary (a store's internal subclasses never reach clients).
    for cls in _domain_errors(DomainError):
        if cls is DomainError or cls.__module__ != DomainError.__module__:
            continue
        assert error_class(cls.code.value)().retryable is cls.retryable, cls


def test_unknown_and_malformed_errors_stay_typed() -> None:
    error = error_from_body({"code": "brand_new", "message": "m", "retryable": False})
    assert type(error) is TandemError and error.code == "brand_new"
    assert type(error_from_body("garbage")) is client_sdk.InternalError
    assert client_sdk.RateLimited().retryable is True
    assert client_sdk.PermissionDenied().retryable is False


def test_public_names_are_sorted_and_exported() -> None:
    assert client_sdk.__all__ == sorted(client_sdk.__all__)
    for name in client_sdk.__all__:
        assert hasattr(client_sdk, name)
