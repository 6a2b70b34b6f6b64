"""Socket.IO v5, the server side, on the default namespace.

The protocol (socketio/socket.io-protocol): a client CONNECTs to a namespace with an auth
payload and is answered with its id (``0{"sid"}``) or a CONNECT_ERROR
(``4{"message", "data"}``); EVENTs carry ``[name, ...args]`` and, with an id, ask for an ACK;
a DISCONNECT ends the namespace's connection. Tandem serves the default namespace ``/`` only:
a CONNECT to any other is refused as ``Invalid namespace``.

Handlers are registered by event name (``on``) and called as python-socketio calls them, so
the gateway above does not care which library runs the protocol: ``connect(sid, environ,
auth)`` may raise ``ConnectionRefused``; ``disconnect(sid, reason)``; an event's handler
``(sid, *args)`` returns its ack; ``*`` catches unknown events as ``(event, sid, *args)``.
Each event runs in its own task, so one slow handler does not hold up the connection.

Input that is not the protocol (undecodable packets, attachments that do not match their
header, oversized events) is counted, answered with ``payload_too_large`` where the client
asked for an ack, and a client that keeps sending it is cut off (``on_abuse``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from domain.errors import ErrorCode
from server.errors import error_ack
from server.transport.engine import EngineOptions, EngineServer
from server.transport.frames import engineio_frame
from server.transport.packets import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DEFAULT_NAMESPACE,
    DISCONNECT,
    EVENT,
    Codec,
    JsonCodec,
    Packet,
    PacketError,
)
from server.transport.session import Session

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
AbuseHook = Callable[[str], Awaitable[None]]
CountHook = Callable[[str], None]
_ERROR_WINDOW_S = 60.0
_RESERVED_EVENTS = frozenset(("connect", "disconnect", "*"))
CLIENT_DISCONNECT = "client disconnect"
SERVER_DISCONNECT = "server disconnect"


class ConnectionRefused(Exception):
    """Raised by a connect handler: the client gets a CONNECT_ERROR with ``message`` and
    ``data``."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class SocketOptions:
    max_payload_bytes: int
    protocol_error_limit: int
    connect_timeout_s: float = 15.0
    # Events allowed past max_payload_bytes (document syncs carry whole documents).
    large_events: frozenset[str] = frozenset()
    max_large_payload_bytes: int = 0


class SocketServer:
    """The Socket.IO layer, an ``Application`` of Engine.IO (see the module)."""

    def __init__(
        self,
        options: SocketOptions,
        engine_options: EngineOptions,
        codec: Codec,
        *,
        count_error: CountHook,
    ) -> None:
        self.options = options
        self.codec = codec
        self.json_wire = codec.wire if isinstance(codec, JsonCodec) else None
        self._max_large = max(options.max_large_payload_bytes, options.max_payload_bytes)
        self._count_error = count_error
        self.engine = EngineServer(engine_options, self)
        self.handlers: dict[str, Handler] = {}
        # Socket.IO connection id -> its session.
        self.connections: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by whoever owns the connections (the gateway); by default the client is dropped.
        self.on_abuse: AbuseHook = self._drop
        # Set by the runtime (the gateway's kick), for a client whose backlog overflowed.
        self.on_slow: AbuseHook = self._drop

    def on(self, event: str, handler: Handler) -> None:
        self.handlers[event] = handler

    # -- what the gateway calls ---------------------------------------------------------------

    async def emit(self, event: str, *args: Any, to: str) -> None:
        session = self.connections.get(to)
        if session is not None:
            self._send(session, Packet(EVENT, data=[event, *args]))

    async def disconnect(self, sid: str) -> None:
        """Tell the client (DISCONNECT), end its connection, and close its transport: a
        client cut off (slow, abusive, revoked) holds no buffers past this."""
        session = self.connections.get(sid)
        if session is None:
            return
        self._send(session, Packet(DISCONNECT))
        await self._disconnected(session, SERVER_DISCONNECT)
        self.engine.close(session, SERVER_DISCONNECT)

    def event_messages(self, event: str, data: Any) -> list[str | bytes]:
        """The Engine.IO messages of an EVENT packet ``[event, data]``, for ``broadcast``."""
        wire = self.json_wire
        if wire is not None:
            try:
                # Not the packet codec: it looks for bytes only once encoding fails.
                return ["42" + wire.encode([event, data])]
            except TypeError:
                pass  # bytes in the data: a binary event with attachments
        return [
            "4" + m if isinstance(m, str) else m
            for m in self.codec.encode(Packet(EVENT, data=[event, data]))
        ]

    def broadcast(
        self,
        messages: list[str | bytes],
        sids: Iterable[str],
        channel: str | None = None,
        key: str | None = None,
    ) -> None:
        """Send ``messages`` to the connections ``sids``, framed once for every websocket
        (``channel`` and ``key`` let a lagging client's Outbound coalesce latest values)."""
        connections = self.connections
        frames: bytes | None = None
        for sid in sids:
            session = connections.get(sid)
            if session is None:
                continue
            outbound = session.outbound
            if outbound is None:  # long-polling
                for message in messages:
                    session.send(message)
                continue
            if frames is None:
                frames = b"".join(map(engineio_frame, messages))
            outbound.write(frames, channel, key)

    def transport(self, sid: str) -> str:
        return self.connections[sid].transport

    def sid_of(self, eio_sid: str) -> str | None:
        session = self.engine.sessions.get(eio_sid)
        return session.sio_sid if session is not None else None

    def close_transport(self, eio_sid: str) -> None:
        session = self.engine.sessions.get(eio_sid)
        if session is not None:
            self.engine.close(session, "transport error")

    async def _drop(self, eio_sid: str) -> None:
        self.close_transport(eio_sid)

    # -- Engine.IO's Application ---------------------------------------------------------------

    def opened(self, session: Session) -> None:
        # A client must show its token (the Socket.IO CONNECT) in time: a transport that only
        # answers pings would otherwise hold a connection without ever authenticating.
        asyncio.get_running_loop().call_later(
            self.options.connect_timeout_s, self._connected_in_time, session
        )

    def _connected_in_time(self, session: Session) -> None:
        if not session.closed and session.sio_sid is None:
            self._count_error("connect_timeout")
            log.info(
                "closing %s: no Socket.IO CONNECT within %gs",
                session.sid,
                self.options.connect_timeout_s,
            )
            self.engine.close(session, "connect timeout")

    def received(self, session: Session, message: str | bytes) -> Awaitable[None] | None:
        try:
            if isinstance(message, bytes) and self.json_wire is not None:
                return self._attachment(session, message)
            if session.partial is not None:
                session.partial = None
                raise PacketError("text packet while binary attachments were expected")
            if len(message) > self.options.max_payload_bytes:
                return self._oversized(session, message)
            packet = self.codec.decode(message)
        except PacketError as exc:
            return self.malformed(session, str(exc))
        if packet.attachment_count:
            session.partial = packet
            session.partial_bytes = len(message)
            return None
        return self._dispatch(session, packet)

    def malformed(self, session: Session, what: str) -> Awaitable[None] | None:
        """Count, log once per client, and cut off a client that keeps sending garbage."""
        self._count_error("ProtocolError")
        errors = session.errors
        if errors is None:
            errors = session.errors = deque(maxlen=self.options.protocol_error_limit)
            extra = {"connection": session.sio_sid} if session.sio_sid else None
            log.warning("malformed packet from %s: %s", session.sid, what, extra=extra)
        now = time.monotonic()
        errors.append(now)
        if len(errors) >= self.options.protocol_error_limit and now - errors[0] <= _ERROR_WINDOW_S:
            session.errors = None
            return self.on_abuse(session.sid)
        return None

    async def closed(self, session: Session, reason: str) -> None:
        await self._disconnected(session, reason)

    async def slow(self, session: Session) -> None:
        await self.on_slow(session.sid)

    # -- packets ---------------------------------------------------------------------------

    def _dispatch(self, session: Session, packet: Packet) -> Awaitable[None] | None:
        if packet.namespace != DEFAULT_NAMESPACE:
            if packet.type == CONNECT:
                refusal = Packet(CONNECT_ERROR, packet.namespace, {"message": "Invalid namespace"})
                self._send(session, refusal)
            return None  # other packets for a namespace nobody is on: nothing to do
        kind = packet.type
        if kind in (EVENT, BINARY_EVENT):
            self._event(session, packet)
            return None
        if kind == CONNECT:
            return self._connect(session, packet.data)
        if kind == DISCONNECT:
            return self._disconnected(session, CLIENT_DISCONNECT)
        if kind in (ACK, BINARY_ACK):
            return None  # the server asks for no acks
        return self.malformed(session, "CONNECT_ERROR from a client")

    def _event(self, session: Session, packet: Packet) -> None:
        sid = session.sio_sid
        data = packet.data
        if sid is None:
            # The spec: a server that does not get a CONNECT first closes the connection.
            self._count_error("event_before_connect")
            self.engine.close(session, "event before connect")
            return
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            self._spawn_result(self.malformed(session, "an event is a list starting with a name"))
            return
        name = data[0]
        handler = None if name in _RESERVED_EVENTS else self.handlers.get(name)
        if handler is not None:
            call = handler(sid, *data[1:])
        elif (catch_all := self.handlers.get("*")) is not None:
            call = catch_all(name, sid, *data[1:])
        else:
            return
        task = asyncio.ensure_future(self._run(session, call, packet.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, session: Session, call: Awaitable[Any], ack_id: int | None) -> None:
        try:
            result = await call
        except Exception:
            log.exception("%s: error in an event handler", session.sid)
            return
        if ack_id is None:
            return
        args = [] if result is None else list(result) if isinstance(result, tuple) else [result]
        self._send(session, Packet(ACK, data=args, id=ack_id))

    async def _connect(self, session: Session, auth: Any) -> None:
        if session.sio_sid is not None:
            return  # already connected to "/": nothing changes
        sid = secrets.token_urlsafe(15)
        session.sio_sid = sid
        self.connections[sid] = session
        connect = self.handlers.get("connect")
        try:
            if connect is not None:
                await connect(sid, session.environ, auth)
        except ConnectionRefused as refused:
            self._forget(session)
            body: dict[str, Any] = {"message": refused.message}
            if refused.data is not None:
                body["data"] = refused.data
            self._send(session, Packet(CONNECT_ERROR, data=body))
            return
        except Exception:
            log.exception("%s: error in the connect handler", session.sid)
            self._forget(session)
            self._send(session, Packet(CONNECT_ERROR, data={"message": "internal error"}))
            return
        if session.sio_sid == sid:
            self._send(session, Packet(CONNECT, data={"sid": sid}))

    async def _disconnected(self, session: Session, reason: str) -> None:
        sid = self._forget(session)
        handler = self.handlers.get("disconnect")
        if sid is not None and handler is not None:
            try:
                await handler(sid, reason)
            except Exception:
                log.exception("%s: error in the disconnect handler", session.sid)

    def _forget(self, session: Session) -> str | None:
        sid, session.sio_sid = session.sio_sid, None
        if sid is not None and self.connections.get(sid) is session:
            del self.connections[sid]
        return sid

    def _attachment(self, session: Session, data: bytes) -> Awaitable[None] | None:
        if session.discard:
            session.discard -= 1
            return None
        partial: Packet | None = session.partial
        if partial is None:
            raise PacketError("a binary message with no packet announcing it")
        session.partial_bytes += len(data)
        if session.partial_bytes > self._limit_of(partial):
            session.partial = None
            session.discard = partial.attachment_count - len(partial.attachments) - 1
            self._refuse(session, partial)
            return None
        partial.add_attachment(data)
        if not partial.complete:
            return None
        session.partial = None
        return self._dispatch(session, partial)

    def _oversized(self, session: Session, message: str | bytes) -> Awaitable[None] | None:
        """A message over the general limit: a large event within its own, or refused."""
        if len(message) <= self._max_large:
            packet = self.codec.decode(message)
            if len(message) <= self._limit_of(packet):
                if packet.attachment_count:
                    session.partial = packet
                    session.partial_bytes = len(message)
                    return None
                return self._dispatch(session, packet)
        else:
            packet = JsonCodec.header(message)[0] if isinstance(message, str) else Packet(EVENT)
        self._refuse(session, packet)
        return None

    def _limit_of(self, packet: Packet) -> int:
        """The size limit of a packet: larger for the events that may carry it."""
        data = packet.data
        if (
            packet.type in (EVENT, BINARY_EVENT)
            and isinstance(data, list)
            and data
            and data[0] in self.options.large_events
        ):
            return self._max_large
        return self.options.max_payload_bytes

    def _refuse(self, session: Session, packet: Packet) -> None:
        """Answer an oversized event with ``payload_too_large``: it never reaches a handler."""
        self._count_error("payload_too_large")
        if packet.type in (EVENT, BINARY_EVENT) and packet.id is not None:
            ack = error_ack(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"event payload is over the {self._limit_of(packet)}-byte limit",
            )
            self._send(session, Packet(ACK, data=[ack], id=packet.id))

    def _send(self, session: Session, packet: Packet) -> None:
        for message in self.codec.encode(packet):
            session.send("4" + message if isinstance(message, str) else message)

    def _spawn_result(self, result: Awaitable[None] | None) -> None:
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
