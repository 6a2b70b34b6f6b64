"""Correlation ids on log lines: the request id of an HTTP request, the connection id and the
user of a socket event, on every line logged while handling it (by us, uvicorn or a library).

The fields live in a context variable, so they follow the work into the tasks it starts and
never leak to another request. A request id sent in ``X-Request-ID`` is kept (when it is a
sane token), otherwise one is made; either way the response carries it back.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar, Token

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FIELDS = ("request_id", "connection", "user")
HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

Fields = tuple[tuple[str, str], ...]
# A context variable is module state by nature: one per process, a value per task.
_current: ContextVar[Fields] = ContextVar("tandem_log_fields", default=())


def bind(**fields: str) -> Token[Fields]:
    """Add fields to the current context (until ``unbind`` with the token)."""
    return _current.set(_current.get() + tuple(fields.items()))


def unbind(token: Token[Fields]) -> None:
    _current.reset(token)


class CorrelationFilter(logging.Filter):
    """Copies the context's fields onto each record (``extra=`` fields win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The innermost binding of a field wins: dict() keeps the last value of each key.
        for key, value in dict(_current.get()).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class PlainFormatter(logging.Formatter):
    """The development format, with ``key=value`` for the correlation fields a line has."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{key}={getattr(record, key)}" for key in FIELDS if hasattr(record, key)]
        return f"{line} [{' '.join(extra)}]" if extra else line


class RequestId:
    """Binds each HTTP request's id for its log lines and returns it in ``X-Request-ID``.

    Websockets are left alone: their lines carry the connection id and user (bound by the
    gateway), and a context value kept for a connection's lifetime would cost memory on
    every idle socket.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _incoming(scope["headers"]) or uuid.uuid4().hex
        header = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = bind(request_id=request_id)
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            unbind(token)


def _incoming(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == HEADER:
            return valid_request_id(value)
    return None


def valid_request_id(value: bytes | str | None) -> str | None:
    """``value`` if it is a sane request id, else None: anything else (spaces, quotes, control
    characters) could forge log fields."""
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    return value.decode() if value is not None and _VALID.fullmatch(value) else None
