"""The fast path: established Socket.IO websockets served without per-connection tasks.

python-socketio stays the protocol engine (handshake, namespaces, acks, long-polling). Once a
websocket of ``TandemWebSocketProtocol`` (the ``tandem serve`` default) is established, an
upgrade from long-polling included, Engine.IO's own loop for it would cost, per connection,
a writer task, a reader task, a ping task and the whole ASGI call chain kept suspended, and
per message a queue hand-off and a writer wake-up. Instead the connection is *detached*
(``FastPath.detach``):

- writes: every Engine.IO packet for it, from the Socket.IO layer
  (``TandemEngineServer.send_packet``) or from Engine.IO itself (pings, the close), becomes
  one frame in the connection's ``Outbound``; a publication is framed once for all its
  recipients (``server.delivery``);
- reads: the protocol hands each message to the session (``_Session.received``); JSON events
  are taken in by the Socket.IO server directly (``TandemSocketServer.fast_event``), pongs
  are answered in place, anything else goes, in order, through Engine.IO's ``receive``;
- pings: one timer for the node (``server.pinger``) instead of a sleeping task per session;
- the ASGI call returns, and the connection stays open until either side closes it.

Long-polling clients and other ASGI servers keep python-socketio's path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import engineio
from engineio import exceptions as eio_exceptions, packet
from engineio.async_drivers.asgi import WebSocket as EngineWebSocket
from engineio.async_socket import AsyncSocket

from domain.graceful import finish_or_cancel
from server.engine_guard import MALFORMED, valid_frame
from server.outbound import Flusher, MaxLag, Outbound
from server.pinger import Pinger
from server.waitables import SlimQueue
from server.ws_protocol import RAW_SOCKET, RawSocket
from server.wsframe import engineio_frame

log = logging.getLogger(__name__)

# Called with the Engine.IO session id of a connection whose backlog went over its bound.
SlowHook = Callable[[str], Awaitable[None]]
# Offered each text message of a detached connection; True if it handled it.
EventHook = Callable[[str, str, Outbound], bool]

_PONG = "3"


class FastPath:
    def __init__(self, *, limit_bytes: int, max_lag: MaxLag = 0) -> None:
        self.limit_bytes = limit_bytes
        # Publications of a channel that may wait for a lagging client (within its history).
        self.max_lag = max_lag
        self._flusher = Flusher()
        self._outbounds: dict[str, Outbound] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the owner of the connections (the runtime wires the gateway's kick).
        self.on_slow: SlowHook | None = None
        # Set by the Socket.IO server, to take events in without Engine.IO's receive path.
        self.on_text: EventHook | None = None

    async def __aenter__(self) -> FastPath:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Sessions whose websocket closed as the server stopped are still ending (their
        # disconnect handlers leave channels and presence): let them, before what they
        # use stops, for a bounded time.
        await finish_or_cancel(list(self._tasks), 5.0)

    def outbound(self, eio_sid: str) -> Outbound | None:
        return self._outbounds.get(eio_sid)

    @property
    def connections(self) -> int:
        return len(self._outbounds)

    def detach(self, sock: AsyncSocket, raw: RawSocket) -> bool:
        """Serve the established session ``sock`` on ``raw`` from now on (see the module)."""
        if not raw.open or sock.closed:
            return False
        sid = sock.sid
        outbound = Outbound(
            raw,
            self._flusher,
            limit_bytes=self.limit_bytes,
            on_overflow=lambda out: self._overflowed(sid, out),
            max_lag=self.max_lag,
        )
        if raw.paused:
            outbound.pause()
        # What Engine.IO queued before (its OPEN packet, what was sent during an upgrade)
        # goes first; the session's queue then writes straight through.
        queued = sock.queue
        while not queued.empty():
            pkt = queued.get_nowait()
            queued.task_done()
            if pkt is not None:
                outbound.write(frame_of(pkt))
        session = _Session(self, sock, raw, outbound)
        sock.queue = session
        raw.listener = outbound
        self._outbounds[sid] = outbound
        raw.detach(session)
        return True

    def release(self, eio_sid: str, outbound: Outbound) -> None:
        if self._outbounds.get(eio_sid) is outbound:
            del self._outbounds[eio_sid]
        outbound.close()

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _overflowed(self, eio_sid: str, outbound: Outbound) -> None:
        log.info(
            "%s fell too far behind (bound %d bytes; %d queued, %d in the transport and the "
            "kernel); disconnecting",
            eio_sid,
            self.limit_bytes,
            outbound.overflow_at[0],
            outbound.overflow_at[1],
        )
        if self.on_slow is not None:
            self.spawn(self.on_slow(eio_sid))


class _Session:
    """One detached Engine.IO session: the receiver of its websocket's messages, and the
    queue Engine.IO puts its packets in (they go straight to the ``Outbound``)."""

    __slots__ = ("_fast", "_sock", "_raw", "_outbound", "_backlog")

    def __init__(
        self, fast: FastPath, sock: AsyncSocket, raw: RawSocket, outbound: Outbound
    ) -> None:
        self._fast = fast
        self._sock = sock
        self._raw = raw
        self._outbound = outbound
        # Messages waiting behind one that takes Engine.IO's (awaited) receive; None at the
        # end stands for the connection's loss.
        self._backlog: list[str | bytes | None] | None = None

    # -- from the websocket ----------------------------------------------------------------

    def received(self, data: str | bytes) -> None:
        if self._backlog is not None:
            self._backlog.append(data)
        elif not self._take(data):
            self._backlog = [data]
            self._fast.spawn(self._drain())

    def lost(self) -> None:
        self._fast.release(self._sock.sid, self._outbound)
        if self._backlog is not None:
            self._backlog.append(None)
        else:
            self._backlog = [None]
            self._fast.spawn(self._drain())

    def _take(self, data: str | bytes) -> bool:
        """Handle ``data`` in place if it needs no awaiting: a pong, a JSON event."""
        if not isinstance(data, str):
            return False
        if data == _PONG:  # what Engine.IO's receive does with one, without its log line
            self._sock.schedule_ping()
            return True
        on_text = self._fast.on_text
        if on_text is None or not valid_frame(data):
            return False
        return on_text(self._sock.sid, data, self._outbound)

    async def _drain(self) -> None:
        backlog = self._backlog
        assert backlog is not None
        over = False
        try:
            while backlog:
                data = backlog.pop(0)
                if data is None:
                    await self._end()
                elif not over and not self._take(data) and not await self._receive(data):
                    over = True  # as Engine.IO's loop ends: the rest is not read
                    self._close()
        finally:
            self._backlog = None

    async def _receive(self, data: str | bytes) -> bool:
        """Engine.IO's websocket loop, for one message; False once the session is over."""
        sock = self._sock
        if isinstance(data, str) and not valid_frame(data):
            data = MALFORMED  # counted as a protocol error by the Socket.IO layer
        try:
            await sock.receive(packet.Packet(encoded_packet=data))
        except eio_exceptions.UnknownPacketError:
            pass
        except eio_exceptions.SocketIsClosedError:
            return False
        except Exception:
            log.exception("%s: error receiving a packet", sock.sid)
        return not sock.closed

    async def _end(self) -> None:
        """The websocket is gone: so is the session, as at the end of Engine.IO's loop."""
        sock = self._sock
        server = sock.server
        await sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        if server.sockets.get(sock.sid) is sock:
            del server.sockets[sock.sid]

    def _close(self) -> None:
        # What is queued goes out before the close frame.
        self._fast.release(self._sock.sid, self._outbound)
        self._raw.close()

    # -- from Engine.IO: the session's queue -----------------------------------------------

    def put_nowait(self, pkt: packet.Packet | None) -> None:
        if pkt is not None:
            self._outbound.write(frame_of(pkt))
        else:
            # The session is over (``TandemSocketServer`` puts None once Engine.IO has closed
            # it, as Engine.IO's loop does to stop its writer): its websocket closes now,
            # where Engine.IO's loop would wait up to a ping interval and timeout for it.
            self._close()

    async def put(self, pkt: packet.Packet | None) -> None:
        self.put_nowait(pkt)

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


class _WebSocket(EngineWebSocket):  # type: ignore[misc]
    """Engine.IO's ASGI websocket driver; a Tandem websocket is detached once established.

    Engine.IO's ``_websocket_handler`` runs the upgrade handshake and then its own loop
    until the connection ends. For a connection the fast path can own, this runs the same
    handshake (below, as engine.io 4.15 does it) and then detaches the connection instead.
    """

    async def __call__(self, environ: dict[str, Any]) -> Any:
        raw = environ["asgi.scope"].get("extensions", {}).get(RAW_SOCKET)
        sock = getattr(self.handler, "__self__", None)  # the bound _websocket_handler's
        # Only TandemEngineServer installs this driver: its sockets' server has ``fast``.
        if raw is None or not isinstance(sock, AsyncSocket) or sock.server.fast is None:
            return await super().__call__(environ)
        fast: FastPath = sock.server.fast
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await self.asgi_send({"type": "websocket.accept"})
        if not await self._establish(sock):
            return ""
        if not fast.detach(sock, raw):
            await sock.close(wait=False, abort=True, reason=sock.server.reason.TRANSPORT_CLOSE)
        else:
            sock.server.logger.info("%s: Upgrade to websocket successful", sock.sid)
        self.asgi_receive = self.asgi_send = None
        return ""

    async def _establish(self, sock: AsyncSocket) -> bool:
        if not sock.connected:  # a websocket from the start
            sock.connected = sock.upgraded = True
            return True
        # An upgrade from long-polling: the client probes, then asks for the upgrade.
        sock.upgrading = True  # holds the long-polling transport's sends meanwhile
        try:
            probe = packet.Packet(encoded_packet=await self.wait())
            if probe.packet_type != packet.PING or probe.data != "probe":
                sock.server.logger.info("%s: Failed websocket upgrade, no PING packet", sock.sid)
                return False
            await self.send(packet.Packet(packet.PONG, data="probe").encode())
            await sock.queue.put(packet.Packet(packet.NOOP))  # ends the pending poll
            if packet.Packet(encoded_packet=await self.wait()).packet_type != packet.UPGRADE:
                sock.server.logger.info("%s: Failed websocket upgrade", sock.sid)
                return False
        except OSError:
            return False
        finally:
            sock.upgrading = False
        sock.upgraded = True
        return True


class TandemEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """Engine.IO server whose websockets the fast path serves once established."""

    fast: FastPath | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The async driver table is engine.io's module-level dict: replace, do not mutate.
        self._async = {**self._async, "websocket": _WebSocket}  # type: ignore[has-type]
        self.pinger = Pinger(self.ping_interval)

    def create_queue(self, *args: Any, **kwargs: Any) -> SlimQueue[Any]:
        # Each session's packet queue (engine.io sockets are its only callers).
        return SlimQueue()

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is AsyncSocket._send_ping:
            self.pinger.schedule(target.__self__)  # server.pinger: one timer for all
            return None
        return super().start_background_task(target, *args, **kwargs)

    async def send_packet(self, sid: str, pkt: Any) -> None:
        fast = self.fast
        outbound = fast.outbound(sid) if fast is not None else None
        if outbound is None:
            await super().send_packet(sid, pkt)
            return
        outbound.write(frame_of(pkt))

    async def shutdown(self) -> None:
        self.pinger.close()
        await super().shutdown()


def frame_of(pkt: packet.Packet) -> bytes:
    """The websocket frame of an Engine.IO packet."""
    # Engine.IO caches a packet's encoding whatever the transport, and a packet emitted to
    # several clients is shared: encode for websocket without touching that cache.
    cached, pkt.encode_cache = pkt.encode_cache, None
    try:
        return engineio_frame(pkt.encode())
    finally:
        pkt.encode_cache = cached
