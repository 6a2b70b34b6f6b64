"""Opening connections: the first one, and each one after a drop, with backoff and tokens."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from client_sdk._connection import Connection, EventHandler, NoticeHandler
from client_sdk._errors import (
    PermissionDenied,
    TandemError,
    TokenExpired,
    Unauthorized,
    error_class,
)
from client_sdk._models import Notice
from client_sdk._retry import backoff_delay

log = logging.getLogger("client_sdk")

TokenProvider = Callable[[], str | Awaitable[str]]
Serializer = Literal["json", "msgpack"]


class Connector:
    """Makes the `Connection` of a `Client`, each new one with the token it needs.

    A plain string token is used as it is; a provider is asked once at first and again when
    the server says the token expired.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | TokenProvider | None,
        transports: Sequence[str] | None,
        serializer: Serializer,
        socketio_path: str,
        headers: Mapping[str, str] | None,
        connect_timeout: float,
        reconnect_delay: float,
        reconnect_delay_max: float,
        on_event: EventHandler,
        on_notice: NoticeHandler,
        status: Callable[[], str],
    ) -> None:
        self.url = url
        self._token_source = token
        self._token: str | None = None
        self._transports = tuple(transports) if transports else None
        self._serializer: Serializer = serializer
        self._socketio_path = socketio_path
        self._headers = dict(headers or {})
        self._connect_timeout = connect_timeout
        self._reconnect_delay = reconnect_delay
        self._reconnect_delay_max = reconnect_delay_max
        self._on_event = on_event
        self._on_notice = on_notice
        self._status = status

    async def fetch_token(self) -> str | None:
        """The token: the string given, or what the provider returns now."""
        source = self._token_source
        if source is None or isinstance(source, str):
            return source
        token: Any = source()
        if inspect.isawaitable(token):
            token = await token
        if not isinstance(token, str):
            raise TypeError(f"the token provider returned {type(token).__name__}, not str")
        return token

    async def first(self) -> Connection:
        """The first connection; raise the refusal (`Unauthorized`, `TokenExpired`, ...)."""
        self._token = await self.fetch_token()
        try:
            return await self._open()
        except TokenExpired:
            if not callable(self._token_source):
                raise
            self._token = await self.fetch_token()
            return await self._open()

    async def reconnect(self, notice: Notice | None) -> Connection:
        """Connect again, with backoff; raise the error that makes retrying pointless.

        ``notice``: the ``server.notice`` that came before the drop, if any: it may forbid
        reconnecting, ask for a fresh token or for a delay (``retry_after_ms``).
        """
        refresh = False
        floor = 0.0
        if notice is not None:
            if not notice.reconnect:
                raise error_class(notice.code)(notice.message or notice.code, code=notice.code)
            refresh = notice.code == TokenExpired.default_code
            floor = notice.retry_after_ms / 1000
        can_refresh = callable(self._token_source)
        if refresh and not can_refresh:
            raise TokenExpired("the token expired and no token provider was given")
        attempt = 0
        while True:
            delay = backoff_delay(attempt, self._reconnect_delay, self._reconnect_delay_max)
            await asyncio.sleep(max(delay, floor) if attempt == 0 else delay)
            attempt += 1
            fresh = False
            try:
                if refresh:
                    self._token = await self.fetch_token()
                    refresh, fresh = False, True
                conn = await self._open()
            except TokenExpired:
                if fresh or not can_refresh:
                    raise
                refresh = True
            except (Unauthorized, PermissionDenied):
                raise
            except TandemError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
            except Exception:  # a failing token provider is retried like the network
                log.warning("token provider failed (attempt %d)", attempt, exc_info=True)
            else:
                log.info("reconnected after %d attempt(s)", attempt)
                return conn

    async def _open(self) -> Connection:
        conn = Connection(
            serializer=self._serializer,
            timeout=self._connect_timeout,
            on_event=self._on_event,
            on_notice=self._on_notice,
        )
        await conn.open(
            self.url,
            token=self._token,
            transports=self._transports,
            socketio_path=self._socketio_path,
            headers=self._headers,
            status=self._status(),
        )
        return conn
