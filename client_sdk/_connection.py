"""One Socket.IO connection: a python-socketio ``AsyncClient`` that never reconnects itself.

The `Client` owns reconnection (python-socketio does not reconnect after a server-initiated
disconnect, and a new connection needs a fresh token anyway), so each connection attempt gets
a new ``AsyncClient``: no state leaks from one connection into the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import socketio

from client_sdk._errors import ConnectionLost, TandemError, error_from_body
from client_sdk._models import Notice

log = logging.getLogger("client_sdk")

EventHandler = Callable[[str, Any], None]
NoticeHandler = Callable[[Notice], None]
NOTICE_EVENT = "server.notice"


class Connection:
    """A single connection; ``closed`` is set once it is gone for whatever reason."""

    def __init__(
        self,
        *,
        serializer: str,
        timeout: float,
        on_event: EventHandler,
        on_notice: NoticeHandler,
    ) -> None:
        self.closed = asyncio.Event()
        self.notice: Notice | None = None
        self._on_event = on_event
        self._on_notice = on_notice
        self._pending: set[asyncio.Future[Any]] = set()
        self._refusal: object = None
        self._timeout = timeout
        self._sio = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            serializer="msgpack" if serializer == "msgpack" else "default",
            request_timeout=timeout,
        )
        # Handlers are plain functions on purpose: python-socketio runs each incoming packet in
        # its own task, and a handler that never suspends keeps them in arrival order.
        self._sio.on("connect_error", self._handle_connect_error)
        self._sio.on("disconnect", self._handle_disconnect)
        self._sio.on(NOTICE_EVENT, self._handle_notice)
        self._sio.on("*", self._handle_event)

    async def open(
        self,
        url: str,
        *,
        token: str | None,
        transports: Sequence[str] | None,
        socketio_path: str,
        headers: Mapping[str, str],
        status: str = "online",
    ) -> None:
        """Connect and authenticate; raise the typed refusal or `ConnectionLost`.

        ``status`` is the user's status this connection starts with (see `Client.set_status`).
        """
        auth: dict[str, str] = {"token": token} if token is not None else {}
        if status != "online":
            auth["status"] = status
        try:
            await self._sio.connect(
                url,
                headers=dict(headers),
                auth=auth,
                transports=list(transports) if transports else None,
                socketio_path=socketio_path,
                wait_timeout=self._timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.close()
            raise self._refusal_error(str(exc)) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect (a no-op when already disconnected) and release the HTTP session."""
        eio = self._sio.eio
        disconnect = asyncio.ensure_future(self._sio.disconnect())
        try:
            # A graceful disconnect also waits for the pending long-poll GET, which the server
            # may hold for a whole ping interval. Once the goodbye is written, end that GET by
            # closing the HTTP session.
            write_loop = getattr(eio, "write_loop_task", None)
            if write_loop is not None:
                await asyncio.wait({write_loop}, timeout=1.0)
            await asyncio.wait({disconnect}, timeout=0.1)
            if not disconnect.done() and getattr(eio, "http", None) is not None:
                await eio.http.close()
            await asyncio.wait({disconnect}, timeout=2.0)
            if disconnect.done():
                disconnect.result()
            else:
                disconnect.cancel()
                if eio.http is not None and not eio.http.closed:
                    await eio.http.close()
        except Exception:  # the transport may be half gone; nothing left to tell the server
            log.debug("error while disconnecting", exc_info=True)
        self._closed()

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected) and not self.closed.is_set()

    async def request(self, event: str, payload: Mapping[str, Any]) -> Any:
        """Emit ``event`` with an ack and return the ack's argument.

        Raises:
            ConnectionLost: The connection is or goes down before the ack arrives.
        """
        if self.closed.is_set():
            raise ConnectionLost("not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(future)

        def on_ack(*args: Any) -> None:
            if not future.done():
                future.set_result(args[0] if len(args) == 1 else list(args))

        try:
            try:
                await self._sio.emit(event, dict(payload), callback=on_ack)
            except socketio.exceptions.SocketIOError as exc:
                raise ConnectionLost(f"cannot send {event!r}: {exc}") from None
            return await future
        finally:
            self._pending.discard(future)

    def _refusal_error(self, fallback: str) -> TandemError:
        refusal = self._refusal
        if isinstance(refusal, Mapping):
            body = refusal.get("data")
            if isinstance(body, Mapping) and "code" in body:
                return error_from_body(body, default_code="unauthorized")
            message = refusal.get("message")
            if message:
                return ConnectionLost(f"connection refused: {message}")
        if isinstance(refusal, str) and refusal:
            return ConnectionLost(f"cannot connect: {refusal}")
        return ConnectionLost(f"cannot connect: {fallback}")

    def _closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending:
            if not future.done():
                future.set_exception(ConnectionLost("the connection dropped before the reply"))

    def _handle_connect_error(self, data: object = None, *_: object) -> None:
        self._refusal = data

    def _handle_disconnect(self, reason: object = None) -> None:
        log.debug("disconnected: %s", reason)
        self._closed()

    def _handle_notice(self, data: object = None, *_: object) -> None:
        notice = Notice.from_wire(data)
        if notice.channel is None:  # about the connection: it decides how to reconnect
            self.notice = notice
        self._on_notice(notice)

    def _handle_event(self, event: str, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], Mapping):
            self._on_event(event, args[0])
        else:
            log.debug("ignoring event %r with %d arguments", event, len(args))
