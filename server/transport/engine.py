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
import binascii
import json
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from domain.graceful import finish_or_cancel
from server.outbound import Flusher, MaxLag, Outbound
from server.transport.heartbeat import Beating, Heartbeat
from server.transport.session import POLLING, WEBSOCKET, Session
from server.transport.websocket import SOCKET, Socket
from server.wsframe import engineio_frame

log = logging.getLogger(__name__)

CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "1", "2", "3", "4", "5", "6"
_TYPES = frozenset("0123456")
# The spec's error codes, each answered with HTTP 400 and ``{"code", "message"}``.
UNKNOWN_TRANSPORT = (0, "Transport unknown")
UNKNOWN_SID = (1, "Session ID unknown")
BAD_METHOD = (2, "Bad handshake method")
BAD_REQUEST = (3, "Bad request")
FORBIDDEN = (4, "Forbidden")
UNSUPPORTED_VERSION = (5, "Unsupported protocol version")
_TEXT = [(b"content-type", b"text/plain; charset=UTF-8")]


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

    async def shutdown(self) -> None:
        """Sessions closed as the server stopped are still ending (their handlers leave
        channels and presence): let them, for a bounded time; then stop the heartbeat."""
        for session in list(self.sessions.values()):
            self.close(session, "server shutdown")
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
            if error is not None:
                await _refuse_websocket(send, error)
            else:
                await self._websocket(scope, receive, send, sid)
            return
        cors = self._cors_headers(origin)
        method = scope["method"]
        if method == "OPTIONS":
            await _answer(send, 204, b"", cors + _preflight(headers))
            return
        if method not in ("GET", "POST"):
            await _refuse(send, BAD_METHOD, cors)
            return
        error = self._check(query, transport, origin, headers, scope)
        if error is None and transport != POLLING:
            error = BAD_REQUEST
        if error is not None:
            await _refuse(send, error, cors)
        elif sid is None:
            if method == "GET":
                await self._open_polling(scope, send, cors)
            else:
                await _refuse(send, BAD_METHOD, cors)
        else:
            session = self.sessions.get(sid)
            if session is None:
                await _refuse(send, UNKNOWN_SID, cors)
            elif session.transport != POLLING:
                await _refuse(send, BAD_REQUEST, cors)
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

    def _cors_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
        ]

    # -- sessions ----------------------------------------------------------------------------

    def _new_session(self, scope: Scope, transport: str) -> Session:
        sid = secrets.token_urlsafe(15)
        session = Session(sid, _environ(scope), transport)
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
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]
        if session.outbound is not None:
            session.outbound.close()  # what is queued goes out before the close frame
            assert session.socket is not None
            session.socket.close()
        else:
            # A long-polling client learns it at its next poll: the CLOSE packet.
            session.send(CLOSE)
        session.closed = True
        self.spawn(self._app.closed(session, reason))

    def _ping(self, session: Beating) -> None:
        assert isinstance(session, Session)
        session.send(PING)

    def _expire(self, session: Beating) -> None:
        assert isinstance(session, Session)
        log.debug("%s: ping timeout", session.sid)
        self.close(session, "ping timeout")

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
            return self._app.malformed(session, "unexpected engine.io packet")
        return None

    # -- long-polling ------------------------------------------------------------------------

    async def _open_polling(
        self, scope: Scope, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        session = self._new_session(scope, POLLING)
        session.send(self._open_packet(session, [WEBSOCKET]))
        self.heartbeat.start(session)
        self._app.opened(session)
        await _answer(send, 200, session.take_polled(), _TEXT + cors)

    async def _poll(self, session: Session, send: Send, cors: list[tuple[bytes, bytes]]) -> None:
        if session.poll is not None:
            # The spec: a second concurrent GET is a client error, and ends the session.
            self.close(session, "duplicate poll")
            await _refuse(send, BAD_REQUEST, cors)
            return
        if not session.polled and not session.closed:
            session.poll = asyncio.get_running_loop().create_future()
            try:
                await session.poll
            finally:
                session.poll = None
        await _answer(send, 200, session.take_polled(), _TEXT + cors)

    async def _post(
        self, session: Session, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        if session.posting:
            self.close(session, "duplicate post")
            await _refuse(send, BAD_REQUEST, cors)
            return
        session.posting = True
        try:
            body = await _body(receive)
            packets = _payload(body)
            if packets is None:
                handled = self._app.malformed(session, "malformed polling payload")
                if handled is not None:
                    await handled
                await _answer(send, 400, b"malformed engine.io payload", _TEXT + cors)
                return
            for packet in packets:
                if session.closed:
                    break
                handled = self.received(session, packet)
                if handled is not None:
                    await handled
        finally:
            session.posting = False
        await _answer(send, 200, b"ok", [(b"content-type", b"text/html")] + cors)

    # -- websockets --------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, sid: str | None) -> None:
        socket: Socket | None = scope.get("extensions", {}).get(SOCKET)
        if socket is None:
            # Another ASGI server: Tandem's websocket protocol is what makes these work.
            await _refuse_websocket(send, BAD_REQUEST)
            return
        if sid is None:
            await send({"type": "websocket.accept"})
            session = self._new_session(scope, WEBSOCKET)
            self._attach(session, socket)
            session.send(self._open_packet(session, []))
            self.heartbeat.start(session)
            self._app.opened(session)
            return
        polling = self.sessions.get(sid)
        if polling is None or polling.transport != POLLING or polling.upgrading:
            await _refuse_websocket(send, UNKNOWN_SID if polling is None else BAD_REQUEST)
            return
        await send({"type": "websocket.accept"})
        polling.upgrading = True
        upgrade = _Upgrade(self, polling, socket)
        socket.detach(upgrade)
        upgrade.timer = asyncio.get_running_loop().call_later(
            self.options.upgrade_timeout_s, upgrade.fail
        )

    def _attach(self, session: Session, socket: Socket) -> None:
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
        socket.detach(_Reader(self, session))

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


class _Reader:
    """A websocket session's messages, in order: handled in place when they need no
    awaiting, queued behind one that does."""

    __slots__ = ("_engine", "_session")

    def __init__(self, engine: EngineServer, session: Session) -> None:
        self._engine = engine
        self._session = session

    def received(self, data: str | bytes) -> None:
        session = self._session
        if session.backlog is not None:
            session.backlog.append(data)
            return
        if isinstance(data, str) and (not data or data[0] not in _TYPES):
            handled = self._engine._app.malformed(session, "malformed engine.io frame")
        else:
            handled = self._engine.received(session, data)
        if handled is not None:
            session.backlog = []
            self._engine.spawn(self._drain(handled))

    def lost(self) -> None:
        session = self._session
        if session.backlog is not None:
            session.backlog.append(None)
        else:
            self._engine.close(session, "transport close")

    async def _drain(self, first: Awaitable[None]) -> None:
        session = self._session
        backlog = session.backlog
        assert backlog is not None
        try:
            await first
            while backlog:
                data = backlog.pop(0)
                if data is None:
                    self._engine.close(session, "transport close")
                    continue
                if session.closed:
                    continue
                if isinstance(data, str) and (not data or data[0] not in _TYPES):
                    handled = self._engine._app.malformed(session, "malformed engine.io frame")
                else:
                    handled = self._engine.received(session, data)
                if handled is not None:
                    await handled
        except Exception:
            log.exception("%s: error handling a message", session.sid)
        finally:
            session.backlog = None


class _Upgrade:
    """A long-polling session moving to a websocket: probe, noop, upgrade."""

    __slots__ = ("_engine", "_session", "_socket", "_probed", "timer")

    def __init__(self, engine: EngineServer, session: Session, socket: Socket) -> None:
        self._engine = engine
        self._session = session
        self._socket = socket
        self._probed = False
        self.timer: asyncio.TimerHandle | None = None

    def received(self, data: str | bytes) -> None:
        session = self._session
        if session.closed:
            self.fail()
        elif not self._probed and data == PING + "probe":
            self._probed = True
            self._socket.write(engineio_frame(PONG + "probe"))
            session.send(NOOP)  # ends the pending poll: the client stops polling
        elif self._probed and data == UPGRADE:
            self._cancel()
            session.upgrading = False
            self._engine._attach(session, self._socket)
        else:
            log.info("%s: failed websocket upgrade (%r)", session.sid, str(data)[:16])
            self.fail()

    def lost(self) -> None:
        self._cancel()
        self._session.upgrading = False

    def fail(self) -> None:
        self._cancel()
        self._session.upgrading = False
        self._socket.close()

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _environ(scope: Scope) -> dict[str, Any]:
    """What is kept of the handshake: the client's address (after proxy headers), its query
    and the few headers the application reads."""
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REMOTE_ADDR": client[0] if client else "",
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
    }
    for name, value in scope.get("headers", []):
        key = _KEPT_HEADERS.get(name)
        if key is not None:
            environ[key] = value.decode("latin-1")
    return environ


_KEPT_HEADERS = {
    b"origin": "HTTP_ORIGIN",
    b"user-agent": "HTTP_USER_AGENT",
    b"x-forwarded-for": "HTTP_X_FORWARDED_FOR",
    b"x-request-id": "HTTP_X_REQUEST_ID",
}


def _payload(body: bytes) -> list[str | bytes] | None:
    """The packets of a long-polling POST, or None if it is not a valid payload."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    packets: list[str | bytes] = []
    for packet in text.split("\x1e"):
        if packet.startswith("b"):
            try:
                packets.append(binascii.a2b_base64(packet[1:].encode("ascii"), strict_mode=True))
            except (binascii.Error, UnicodeEncodeError):
                return None
        elif not packet or packet[0] not in _TYPES:
            return None
        else:
            packets.append(packet)
    return packets


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _preflight(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    answer = [(b"access-control-allow-methods", b"OPTIONS, GET, POST")]
    asked = headers.get(b"access-control-request-headers")
    if asked:
        answer.append((b"access-control-allow-headers", asked))
    return answer


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, error: tuple[int, str], cors: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"code": error[0], "message": error[1]}).encode()
    await _answer(send, 400, body, [(b"content-type", b"application/json"), *cors])


async def _refuse_websocket(send: Send, error: tuple[int, str]) -> None:
    """A refused websocket handshake: 400 with the same body as for long-polling."""
    body = json.dumps({"code": error[0], "message": error[1]}).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
