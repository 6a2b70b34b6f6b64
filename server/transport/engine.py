"""Engine.IO v4, the server side: sessions over long-polling and websockets.

The protocol (socketio/engine.io-protocol): a handshake opens a session (``0`` + JSON with
its id, the upgrades on offer and the heartbeat in milliseconds); packets are one type digit
and a payload (``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade, ``6`` noop);
long-polling carries several per request, separated by 0x1e, binary ones as ``b`` + base64; a
websocket carries one per frame, binary messages as binary frames. The server pings; a
session that does not answer within the timeout ends. A long-polling session upgrades to a
websocket by a probe (``2probe``/``3probe``), a noop that ends the pending poll, and ``5``.

Everything above Engine.IO (Socket.IO) is an ``Application``, told of each session's opening,
messages and end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from domain.graceful import finish_or_cancel
from server.transport.heartbeat import Beating, Heartbeat
from server.transport.http import (
    BAD_METHOD,
    BAD_REQUEST,
    DRAINING,
    FORBIDDEN,
    TEXT,
    UNKNOWN_SID,
    UNKNOWN_TRANSPORT,
    UNSUPPORTED_VERSION,
    Headers,
    answer,
    environ,
    parse_payload,
    preflight,
    read_body,
    refuse,
    refuse_websocket,
)
from server.transport.outbound import Flusher, MaxLag, Outbound
from server.transport.readers import Reader, Upgrade
from server.transport.session import CLOSE, MESSAGE, NOOP, PING, POLLING, PONG, WEBSOCKET, Session
from server.transport.websocket import SOCKET, Socket

log = logging.getLogger(__name__)


class Application(Protocol):
    """What rides on Engine.IO (Socket.IO): told of sessions and their messages."""

    def opened(self, session: Session) -> None: ...

    def received(self, session: Session, message: str | bytes) -> Awaitable[None] | None:
        """Handle one message; an awaitable when handling must finish before the next."""

    def malformed(self, session: Session, what: str) -> Awaitable[None] | None:
        """Input that is not Engine.IO (counted, and a client that insists is cut off)."""

    def closed(self, session: Session, reason: str) -> Awaitable[None]: ...

    def slow(self, session: Session) -> Awaitable[None]:
        """A websocket session's backlog went over its bound."""


@dataclass(frozen=True, slots=True)
class EngineOptions:
    ping_interval_s: float
    ping_timeout_s: float
    max_payload_bytes: int
    # Origins allowed besides the node's own (``*``: any).
    cors_origins: tuple[str, ...] = ()
    # A websocket session's backlog bound, and how many publications of one channel may wait.
    client_buffer_bytes: int = 1 << 20
    max_lag: MaxLag = 0
    upgrade_timeout_s: float = 10.0


class EngineServer:
    """The ASGI app for the Engine.IO path (see the module)."""

    def __init__(self, options: EngineOptions, app: Application) -> None:
        self.options = options
        self._app = app
        self.sessions: dict[str, Session] = {}
        # Off once the node drains: no new session opens (``stop_accepting``).
        self.accepting = True
        self._flusher = Flusher()
        self._tasks: set[asyncio.Task[None]] = set()
        self.heartbeat = Heartbeat(
            options.ping_interval_s, options.ping_timeout_s, ping=self._ping, expire=self._expire
        )
        self._open_fields = {
            "pingInterval": round(options.ping_interval_s * 1000),
            "pingTimeout": round(options.ping_timeout_s * 1000),
            "maxPayload": options.max_payload_bytes,
        }

    @property
    def websockets(self) -> int:
        return sum(1 for s in self.sessions.values() if s.outbound is not None)

    def stop_accepting(self) -> None:
        """Open no new session: a handshake is answered 503 with Retry-After."""
        self.accepting = False

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            self.close(session, reason)

    async def shutdown(self) -> None:
        """Sessions closed as the server stopped are still ending (their handlers leave
        channels and presence): let them, for a bounded time; then stop the heartbeat."""
        self.close_all("server shutdown")
        await finish_or_cancel(list(self._tasks), 5.0)
        self.heartbeat.close()

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        sid = query.get("sid", [None])[0]
        transport = query.get("transport", [""])[0]
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        if scope["type"] == "websocket":
            error = self._check(query, transport, origin, headers, scope)
            if error is None and transport != WEBSOCKET:
                error = BAD_REQUEST
            if error is None and sid is None and not self.accepting:
                error = DRAINING
            if error is not None:
                await refuse_websocket(send, error)
            else:
                await self._websocket(scope, receive, send, sid)
            return
        cors = self._cors_headers(origin)
        method = scope["method"]
        if method == "OPTIONS":
            await answer(send, 204, b"", cors + preflight(headers))
            return
        if method not in ("GET", "POST"):
            await refuse(send, BAD_METHOD, cors)
            return
        error = self._check(query, transport, origin, headers, scope)
        if error is None and transport != POLLING:
            error = BAD_REQUEST
        if error is not None:
            await refuse(send, error, cors)
        elif sid is None:
            if method == "GET":
                if self.accepting:
                    await self._open_polling(scope, send, cors)
                else:
                    await refuse(send, DRAINING, cors)
            else:
                await refuse(send, BAD_METHOD, cors)
        else:
            session = self.sessions.get(sid)
            if session is None:
                await refuse(send, UNKNOWN_SID, cors)
            elif session.transport != POLLING:
                await refuse(send, BAD_REQUEST, cors)
            elif method == "GET":
                await self._poll(session, send, cors)
            else:
                await self._post(session, receive, send, cors)

    def _check(
        self,
        query: dict[str, list[str]],
        transport: str,
        origin: bytes | None,
        headers: dict[bytes, bytes],
        scope: Scope,
    ) -> tuple[int, str] | None:
        if query.get("EIO", [""])[0] != "4":
            return UNSUPPORTED_VERSION
        if transport not in (POLLING, WEBSOCKET):
            return UNKNOWN_TRANSPORT
        if origin is not None and not self._origin_allowed(origin, headers, scope):
            return FORBIDDEN
        return None

    def _origin_allowed(self, origin: bytes, headers: dict[bytes, bytes], scope: Scope) -> bool:
        allowed = self.options.cors_origins
        text = origin.decode("latin-1")
        if "*" in allowed or text in allowed:
            return True
        # The node's own origin, as the browser saw it (behind a proxy: its scheme and host).
        host = headers.get(b"x-forwarded-host") or headers.get(b"host") or b""
        scheme = headers.get(b"x-forwarded-proto", b"").decode("latin-1") or {
            "ws": "http",
            "wss": "https",
        }.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        return text == f"{scheme}://{host.decode('latin-1')}"

    def _cors_headers(self, origin: bytes | None) -> Headers:
        if origin is None:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
        ]

    # -- sessions ----------------------------------------------------------------------------

    def _new_session(self, scope: Scope, transport: str) -> Session:
        sid = secrets.token_urlsafe(15)
        session = Session(sid, environ(scope), transport)
        self.sessions[sid] = session
        return session

    def _open_packet(self, session: Session, upgrades: list[str]) -> str:
        return "0" + json.dumps(
            {"sid": session.sid, "upgrades": upgrades, **self._open_fields},
            separators=(",", ":"),
        )

    def close(self, session: Session, reason: str) -> None:
        """End ``session`` now: what was sent before goes out, then the close."""
        if session.closed:
            return
        if session.outbound is not None:
            self._forget(session)
            session.outbound.close()  # what is queued goes out before the close frame
            assert session.socket is not None
            session.socket.close()
        else:
            # A long-polling client learns it at its next poll. What was queued before (a
            # server.notice, the DISCONNECT) goes first, in a poll of its own: the JavaScript
            # client handles a payload's CLOSE before the messages beside it, and would lose
            # them. The session stays reachable for those polls, or one heartbeat if none come.
            if not session.polled:
                session.send(CLOSE)
            delay = self.options.ping_interval_s + self.options.ping_timeout_s
            asyncio.get_running_loop().call_later(delay, self._forget, session)
        session.closed = True
        self.spawn(self._app.closed(session, reason))

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def _ping(self, session: Beating) -> None:
        assert isinstance(session, Session)
        session.send(PING)

    def _expire(self, session: Beating) -> None:
        assert isinstance(session, Session)
        log.debug("%s: ping timeout", session.sid)
        self.close(session, "ping timeout")

    def malformed(self, session: Session, what: str) -> Awaitable[None] | None:
        return self._app.malformed(session, what)

    def received(self, session: Session, packet: str | bytes) -> Awaitable[None] | None:
        """One Engine.IO packet from the client (any transport)."""
        if isinstance(packet, bytes):
            return self._app.received(session, packet)
        kind = packet[:1]
        if kind == MESSAGE:
            return self._app.received(session, packet[1:])
        if kind == PONG:
            self.heartbeat.pong(session)
        elif kind == CLOSE:
            self.close(session, "client close")
        elif kind == PING:  # Engine.IO v3's direction; answered all the same
            session.send(PONG + packet[1:])
        elif kind != NOOP:  # UPGRADE outside an upgrade, OPEN, or not a packet at all
            return self.malformed(session, "unexpected engine.io packet")
        return None

    # -- long-polling ------------------------------------------------------------------------

    async def _open_polling(self, scope: Scope, send: Send, cors: Headers) -> None:
        session = self._new_session(scope, POLLING)
        session.send(self._open_packet(session, [WEBSOCKET]))
        self.heartbeat.start(session)
        self._app.opened(session)
        await answer(send, 200, session.take_polled(), TEXT + cors)

    async def _poll(self, session: Session, send: Send, cors: Headers) -> None:
        if session.poll is not None:
            # The spec: a second concurrent GET is a client error, and ends the session.
            self.close(session, "duplicate poll")
            await refuse(send, BAD_REQUEST, cors)
            return
        if not session.polled and not session.closed:
            session.poll = asyncio.get_running_loop().create_future()
            try:
                await session.poll
            finally:
                session.poll = None
        if session.closed:
            if not session.polled:  # what was queued went in the last poll: now the CLOSE
                session.polled.append(CLOSE)
            if session.polled[-1] == CLOSE:
                self._forget(session)
        await answer(send, 200, session.take_polled(), TEXT + cors)

    async def _post(self, session: Session, receive: Receive, send: Send, cors: Headers) -> None:
        if session.posting:
            self.close(session, "duplicate post")
            await refuse(send, BAD_REQUEST, cors)
            return
        session.posting = True
        try:
            body = await read_body(receive)
            packets = parse_payload(body)
            if packets is None:
                handled = self.malformed(session, "malformed polling payload")
                if handled is not None:
                    await handled
                await answer(send, 400, b"malformed engine.io payload", TEXT + cors)
                return
            for packet in packets:
                if session.closed:
                    break
                handled = self.received(session, packet)
                if handled is not None:
                    await handled
        finally:
            session.posting = False
        await answer(send, 200, b"ok", [(b"content-type", b"text/html")] + cors)

    # -- websockets --------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, sid: str | None) -> None:
        socket: Socket | None = scope.get("extensions", {}).get(SOCKET)
        if socket is None:
            # Another ASGI server: Tandem's websocket protocol is what makes these work.
            await refuse_websocket(send, BAD_REQUEST)
            return
        if sid is None:
            await send({"type": "websocket.accept"})
            session = self._new_session(scope, WEBSOCKET)
            self.attach(session, socket)
            session.send(self._open_packet(session, []))
            self.heartbeat.start(session)
            self._app.opened(session)
            return
        polling = self.sessions.get(sid)
        if polling is None or polling.closed or polling.transport != POLLING or polling.upgrading:
            await refuse_websocket(send, UNKNOWN_SID if polling is None else BAD_REQUEST)
            return
        await send({"type": "websocket.accept"})
        polling.upgrading = True
        upgrade = Upgrade(self, polling, socket)
        socket.detach(upgrade)
        upgrade.timer = asyncio.get_running_loop().call_later(
            self.options.upgrade_timeout_s, upgrade.fail
        )

    def attach(self, session: Session, socket: Socket) -> None:
        """From now on ``session``'s packets are frames on ``socket``."""
        outbound = Outbound(
            socket,
            self._flusher,
            limit_bytes=self.options.client_buffer_bytes,
            on_overflow=lambda out: self._overflowed(session, out),
            max_lag=self.options.max_lag,
        )
        if socket.paused:
            outbound.pause()
        session.socket = socket
        session.transport = WEBSOCKET
        pending = session.polled
        session.polled = []
        session.outbound = outbound
        for packet in pending:  # what waited for a poll goes first (not the poll's NOOP)
            if packet != NOOP:
                session.send(packet)
        socket.listener = outbound
        socket.detach(Reader(self, session))

    def _overflowed(self, session: Session, outbound: Outbound) -> None:
        log.info(
            "%s fell too far behind (bound %d bytes; %d queued, %d in the transport and the "
            "kernel); disconnecting",
            session.sid,
            self.options.client_buffer_bytes,
            outbound.overflow_at[0],
            outbound.overflow_at[1],
        )
        self.spawn(self._app.slow(session))
