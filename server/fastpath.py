"""The fan-out fast path: Socket.IO websocket connections written without per-recipient tasks.

python-socketio stays the protocol engine (handshake, namespaces, acks, long-polling). Its
write path costs, per recipient and message, a task, a queue hand-off, a writer wake-up with
a timeout and four layers of ``send`` before one write. Once a websocket connection is
established (``take_over``), this module owns its writes instead: every Engine.IO packet for
it, from the Socket.IO layer (``TandemEngineServer.send_packet``) or from Engine.IO's own
writer (pings, close), becomes one frame in the connection's ``Outbound``, and a publication
is framed once for all its recipients (``server.delivery``). Its incoming text messages are
offered to the Socket.IO server first (``on_text``): JSON events are taken in there directly
(``TandemSocketServer.fast_event``), everything else goes on to Engine.IO.

Only connections served by ``TandemWebSocketProtocol`` (the ``tandem serve`` default) are
taken over; long-polling clients and other ASGI servers keep python-socketio's path.

Ordering: a connection is taken over only at a moment when Engine.IO holds nothing queued for
it and its writer is inside our ``send``, so nothing sent before can arrive after.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import engineio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.outbound import Flusher, Outbound
from server.waitables import SlimQueue
from server.ws_protocol import RAW_SOCKET, RawSocket
from server.wsframe import engineio_frame

log = logging.getLogger(__name__)

# Called with the Engine.IO session id of a connection whose backlog went over its bound.
SlowHook = Callable[[str], Awaitable[None]]
# Offered each text message of a taken-over connection; True if it handled it.
EventHook = Callable[[str, str, Outbound], bool]


class FastPath:
    def __init__(self, *, limit_bytes: int, path: str = "/socket.io") -> None:
        self.limit_bytes = limit_bytes
        self._path = path
        self._eio: engineio.AsyncServer | None = None
        self._flusher = Flusher()
        self._outbounds: dict[str, Outbound] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the owner of the connections (the runtime wires the gateway's kick).
        self.on_slow: SlowHook | None = None
        # Set by the Socket.IO server, to take events in without Engine.IO's receive path.
        self.on_text: EventHook | None = None

    def attach(self, eio: engineio.AsyncServer) -> None:
        self._eio = eio

    def outbound(self, eio_sid: str) -> Outbound | None:
        return self._outbounds.get(eio_sid)

    @property
    def connections(self) -> int:
        return len(self._outbounds)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def fastpath(scope: Scope, receive: Receive, send: Send) -> None:
            raw = None
            if scope["type"] == "websocket" and scope["path"].startswith(self._path):
                raw = scope.get("extensions", {}).get(RAW_SOCKET)
            if raw is None:
                await app(scope, receive, send)
                return
            socket = _Socket(self, raw, send, _query_sid(scope), receive)
            try:
                await app(scope, socket.receive, socket.send)
            finally:
                socket.release()

        return fastpath

    def take_over(self, eio_sid: str, raw: RawSocket) -> Outbound | None:
        """Own the writes of ``eio_sid`` from now on, if that cannot reorder anything."""
        eio = self._eio
        sock = eio.sockets.get(eio_sid) if eio is not None else None
        if (
            sock is None
            or not sock.upgraded
            or sock.upgrading
            or sock.closed
            or not sock.queue.empty()
            or raw.paused
            or not raw.open
        ):
            return None
        outbound = Outbound(
            raw,
            self._flusher,
            limit_bytes=self.limit_bytes,
            on_overflow=lambda out: self._overflowed(eio_sid, out),
        )
        raw.listener = outbound
        self._outbounds[eio_sid] = outbound
        return outbound

    def release(self, eio_sid: str, outbound: Outbound) -> None:
        if self._outbounds.get(eio_sid) is outbound:
            del self._outbounds[eio_sid]
        outbound.close()

    def _overflowed(self, eio_sid: str, outbound: Outbound) -> None:
        log.info(
            "%s is over its %d-byte bound (%d queued, %d in the transport); disconnecting",
            eio_sid,
            self.limit_bytes,
            outbound.overflow_at[0],
            outbound.overflow_at[1],
        )
        if self.on_slow is None:
            return
        task = asyncio.ensure_future(self.on_slow(eio_sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Socket:
    """One websocket under the fast path: its ASGI ``send``, until and after the take-over."""

    __slots__ = ("_fast", "_raw", "_send", "_receive", "_eio_sid", "outbound")

    def __init__(
        self, fast: FastPath, raw: RawSocket, send: Send, eio_sid: str | None, receive: Receive
    ) -> None:
        self._fast = fast
        self._raw = raw
        self._send = send
        self._receive = receive
        self._eio_sid = eio_sid
        self.outbound: Outbound | None = None

    async def receive(self) -> Message:
        """Engine.IO's receive; events the Socket.IO server takes in directly never reach it."""
        while True:
            message = await self._receive()
            outbound, on_text = self.outbound, self._fast.on_text
            if outbound is None or on_text is None or message["type"] != "websocket.receive":
                return message
            text = message.get("text")
            if text is None or not on_text(self._eio_sid, text, outbound):  # type: ignore[arg-type]
                return message

    async def send(self, message: Message) -> None:
        outbound = self.outbound
        kind = message["type"]
        if outbound is not None:
            if kind == "websocket.send":
                text = message.get("text")
                outbound.write(engineio_frame(text if text is not None else message["bytes"]))
                return
            if kind == "websocket.close":
                self.release()  # what is queued goes out before the close frame
            await self._send(message)
            return
        await self._send(message)
        if kind == "websocket.send":
            if self._eio_sid is None:
                self._eio_sid = _open_sid(message.get("text"))
            if self._eio_sid is not None:
                self.outbound = self._fast.take_over(self._eio_sid, self._raw)

    def release(self) -> None:
        outbound, self.outbound = self.outbound, None
        if outbound is not None and self._eio_sid is not None:
            self._fast.release(self._eio_sid, outbound)
        self._raw.listener = None


class TandemEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """Engine.IO server whose packets for taken-over connections go to their ``Outbound``."""

    fast: FastPath | None = None

    def create_queue(self, *args: Any, **kwargs: Any) -> SlimQueue[Any]:
        # Each session's packet queue (engine.io sockets are its only callers).
        return SlimQueue()

    async def send_packet(self, sid: str, pkt: Any) -> None:
        fast = self.fast
        outbound = fast.outbound(sid) if fast is not None else None
        if outbound is None:
            await super().send_packet(sid, pkt)
            return
        # Engine.IO caches a packet's encoding whatever the transport, and a packet emitted
        # to several clients is shared: encode for websocket without touching that cache.
        cached, pkt.encode_cache = pkt.encode_cache, None
        try:
            outbound.write(engineio_frame(pkt.encode()))
        finally:
            pkt.encode_cache = cached


def _query_sid(scope: Scope) -> str | None:
    """An upgrade from long-polling names its Engine.IO session in the query string."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid")
    return values[0] if values else None


def _open_sid(text: str | None) -> str | None:
    """A direct websocket session learns its id from Engine.IO's OPEN packet ``0{"sid":..}``."""
    if not text or not text.startswith("0{"):
        return None
    try:
        sid = json.loads(text[1:]).get("sid")
    except ValueError:
        return None
    return sid if isinstance(sid, str) else None
