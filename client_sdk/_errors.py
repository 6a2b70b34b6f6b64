"""Typed errors: one class per wire error code, plus the client-side failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class TandemError(Exception):
    """Base of every error the SDK raises for a refused or failed request.

    Attributes:
        code: The stable error code from the wire (for example ``"permission_denied"``).
        message: A human-readable explanation from the server or the SDK.
        retryable: True when the same request may succeed if tried again later.
    """

    default_code: ClassVar[str] = "error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self, message: str = "", *, code: str | None = None, retryable: bool | None = None
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code
        self.retryable = self.default_retryable if retryable is None else retryable
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class Unauthorized(TandemError):
    """The token or API key is missing or invalid."""

    default_code = "unauthorized"


class TokenExpired(TandemError):
    """The token has expired; connect again with a fresh one."""

    default_code = "token_expired"


class TokenRevoked(Unauthorized):
    """An operator revoked the tokens issued to this user before a time; get a new one."""

    default_code = "token_revoked"


class DisconnectedByAdmin(TandemError):
    """An operator disconnected this client (the admin API)."""

    default_code = "disconnected_by_admin"


class UnsubscribedByAdmin(TandemError):
    """An operator ended this client's subscription to a channel (the admin API)."""

    default_code = "unsubscribed_by_admin"


class PermissionDenied(TandemError):
    """The caller may not subscribe or publish to that channel."""

    default_code = "permission_denied"


class UnknownChannel(TandemError):
    """The channel kind does not exist."""

    default_code = "unknown_channel"


class InvalidPayload(TandemError):
    """The request payload failed validation; nothing changed."""

    default_code = "invalid_payload"


class PayloadTooLarge(TandemError):
    """The payload is over the server's size limit."""

    default_code = "payload_too_large"


class RateLimited(TandemError):
    """Too many requests; slow down and retry."""

    default_code = "rate_limited"
    default_retryable = True


class NotFound(TandemError):
    """The addressed resource does not exist."""

    default_code = "not_found"


class Conflict(TandemError):
    """The request conflicts with the current state (for example a terminal job)."""

    default_code = "conflict"


class UnrecoverablePosition(TandemError):
    """The requested stream position is no longer in the channel's history."""

    default_code = "unrecoverable_position"


class InsufficientState(TandemError):
    """The server lacks the state needed to answer."""

    default_code = "insufficient_state"


class SlowConsumer(TandemError):
    """The connection fell too far behind and was dropped by the server."""

    default_code = "slow"
    default_retryable = True


class BadRequest(TandemError):
    """The request is not acceptable (for example too many channels on one connection)."""

    default_code = "bad_request"


class Shutdown(TandemError):
    """The server is restarting; connect again (possibly to another node)."""

    default_code = "shutdown"
    default_retryable = True


class Unavailable(TandemError):
    """The broker is unavailable; retry later."""

    default_code = "broker_unavailable"
    default_retryable = True


class InternalError(TandemError):
    """The server failed unexpectedly."""

    default_code = "internal"
    default_retryable = True


class ConnectionLost(TandemError):
    """The server could not be reached, or the connection dropped before the reply."""

    default_code = "connection_lost"
    default_retryable = True


class RequestTimeout(TandemError):
    """No reply arrived in time."""

    default_code = "timeout"
    default_retryable = True


class ClientClosed(TandemError):
    """The client was closed; no further requests are possible."""

    default_code = "closed"


class DocumentReset(TandemError):
    """The document was deleted and created again (a new epoch) while this copy was open.

    A Yjs document cannot be merged across epochs nor emptied, so the open `LiveDoc` is
    closed: open the document again (``client.docs.open``) to get the new one.
    """

    default_code = "document_reset"


_BY_CODE: dict[str, type[TandemError]] = {
    cls.default_code: cls
    for cls in (
        Unauthorized,
        TokenExpired,
        TokenRevoked,
        DisconnectedByAdmin,
        UnsubscribedByAdmin,
        PermissionDenied,
        UnknownChannel,
        InvalidPayload,
        PayloadTooLarge,
        RateLimited,
        NotFound,
        Conflict,
        UnrecoverablePosition,
        InsufficientState,
        SlowConsumer,
        BadRequest,
        Shutdown,
        Unavailable,
        InternalError,
        ConnectionLost,
        RequestTimeout,
        ClientClosed,
        DocumentReset,
    )
}


def error_class(code: str) -> type[TandemError]:
    """Return the exception class for an error code; `TandemError` for unknown codes.

    Args:
        code: A wire error code such as ``"rate_limited"``.

    Returns:
        The matching `TandemError` subclass.
    """
    return _BY_CODE.get(code, TandemError)


def error_from_body(body: object, *, default_code: str = "internal") -> TandemError:
    """Build the typed exception for a wire error body ``{code, message, retryable}``."""
    if not isinstance(body, Mapping):
        return error_class(default_code)(f"malformed error from server: {body!r}")
    fields: Mapping[str, Any] = body
    code = str(fields.get("code") or default_code)
    message = str(fields.get("message") or code)
    retryable = fields.get("retryable")
    return error_class(code)(
        message, code=code, retryable=retryable if isinstance(retryable, bool) else None
    )


def checked_ack(ack: object) -> Mapping[str, Any]:
    """``ack`` when it says ``ok``; else raise the typed error it carries."""
    if not isinstance(ack, Mapping):
        raise error_class("internal")(f"malformed ack from server: {ack!r}")
    if ack.get("ok") is True:
        return ack
    raise error_from_body(ack.get("error"))
