"""python-socketio, extended through its seams: packet class and a server subclass.

Tested against python-socketio 5.18.1 / python-engineio 4.15.1 (pinned in constraints.txt):
``_handle_eio_message``, ``_binary_packet`` and the engine.io socket's ``queue`` are that
version's internals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import msgpack
import socketio
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

from domain.errors import ErrorCode
from server.engine_guard import MALFORMED
from server.errors import error_ack
from server.fastpath import TandemEngineServer
from server.jsonwire import JsonWire
from server.outbound import Outbound
from server.wsframe import engineio_frame

log = logging.getLogger(__name__)

# Called with the engine.io session id of a client that sent too many malformed packets.
AbuseHook = Callable[[str], Awaitable[None]]
CountHook = Callable[[str], None]
_ERROR_WINDOW_S = 60.0
# Socket.IO clients send one attachment per bytes value in an event; a header announcing more
# than this is refused instead of buffering frames for it (notes B10, CVE-2026-48804).
MAX_ATTACHMENTS = 100
# Engine.IO MESSAGE + Socket.IO EVENT on the default namespace: ``42[...]`` or ``42<ack id>[...]``.
_EVENT_PREFIX = "42"
_RESERVED_EVENTS = frozenset(("connect", "disconnect", "*"))
# What is kept of a connection's request: python-socketio holds the environ for the
# connection's life (connect handlers and ``get_environ`` read it), and Engine.IO's holds the
# ASGI scope, its callables and a request-body reader, ~5 KiB that nothing reads again.
_KEPT_ENVIRON = (
    "REMOTE_ADDR",
    "QUERY_STRING",
    "HTTP_ORIGIN",
    "HTTP_USER_AGENT",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_REQUEST_ID",
)
_ACK_ID_DIGITS = 15  # clients count acks from 0; longer ids take the usual path (and its checks)


class ProtocolError(Exception):
    """Input that is not Socket.IO / Engine.IO as the protocol defines it."""


class CompatMsgPackPacket(MsgPackPacket):  # type: ignore[misc]
    """Drop ``data: None``: socket.io-msgpack-parser rejects a DISCONNECT that carries data."""

    def encode(self) -> bytes:
        fields = self._to_dict()
        if fields.get("data") is None:
            fields.pop("data", None)
        encoded: bytes = msgpack.dumps(fields, default=self.__class__.dumps_default)
        return encoded


class TandemSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """Counts malformed packets instead of logging tracebacks, bounds events and attachments,
    and closes a transport as soon as its session ends."""

    def _engineio_server_class(self) -> type[TandemEngineServer]:
        # python-socketio's seam for its Engine.IO server: ours can hand packets to the
        # fan-out fast path.
        return TandemEngineServer

    def __init__(
        self,
        *,
        max_payload_bytes: int,
        protocol_error_limit: int,
        count_error: CountHook,
        large_events: Collection[str] = (),
        max_large_payload_bytes: int = 0,
        connect_timeout_s: float = 15.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._connect_timeout = connect_timeout_s
        # Events allowed past max_payload_bytes (document syncs carry whole documents).
        self._large_events = frozenset(large_events)
        self._max_large = max(max_large_payload_bytes, max_payload_bytes)
        # Engine.IO would start a task per received message only to run this server's
        # message handler, which starts its own task per event anyway: one task is enough.
        self.eio.async_handlers = False
        self._max_payload = max_payload_bytes
        self._error_limit = protocol_error_limit
        self._count_error = count_error
        # Set by whoever owns the connections (the gateway); by default the client is dropped.
        self.on_abuse: AbuseHook = self._drop
        self._errors: dict[str, deque[float]] = {}
        # Bytes received so far for a binary event still collecting its attachments.
        self._pending_bytes: dict[str, int] = {}
        # Attachments still to swallow after an oversized binary event was refused.
        self._discard: dict[str, int] = {}
        # Set when clients speak JSON (the default serializer): the fast paths encode and
        # decode Socket.IO's JSON themselves.
        self.json_wire = JsonWire() if self.packet_class is sio_packet.Packet else None
        self._handler_tasks: set[asyncio.Task[None]] = set()

    async def _drop(self, eio_sid: str) -> None:
        self.close_transport(eio_sid)

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        kept = {key: environ[key] for key in _KEPT_ENVIRON if key in environ}
        await super()._handle_eio_connect(eio_sid, kept)
        # A client must show its token (the Socket.IO CONNECT) in time: a transport that only
        # answers pings would otherwise hold a connection without ever authenticating.
        asyncio.get_running_loop().call_later(
            self._connect_timeout, self._connected_in_time, eio_sid
        )

    def _connected_in_time(self, eio_sid: str) -> None:
        if eio_sid in self.eio.sockets and self.sid_of(eio_sid) is None:
            self._count_error("connect_timeout")
            log.info("closing %s: no Socket.IO CONNECT within %gs", eio_sid, self._connect_timeout)
            self.close_transport(eio_sid)

    def fast_event(self, eio_sid: str, text: str, outbound: Outbound) -> bool:
        """Handle a JSON client's event from a websocket the fast path owns, or return False.

        The usual way in costs, per event, engine.io's receive and trigger layers, a
        Socket.IO packet decode, the event's task, and for the ack a packet object, its binary
        scan and engine.io's send. Here: the text is parsed once, the event's handler runs in
        its task exactly as python-socketio would call it, and the ack is written to the
        connection's ``Outbound``, behind whatever it already holds. Anything else (another
        namespace, binary, malformed or oversized packets, unknown or reserved events, a
        client not connected to ``/``) returns False and takes the usual path, which has the
        error handling.
        """
        wire = self.json_wire
        if wire is None or not text.startswith(_EVENT_PREFIX) or len(text) > self._max_payload:
            return False
        start = 2
        while start < len(text) and text[start].isdigit():
            start += 1
        if start == len(text) or text[start] != "[" or start > _ACK_ID_DIGITS + 2:
            return False
        try:
            data = wire.decode(text[start:])
        except (ValueError, RecursionError):
            return False
        if not data or not isinstance(data, list) or not isinstance(data[0], str):
            return False
        handler = self.handlers.get("/", {}).get(data[0])
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if (
            handler is None
            or data[0] in _RESERVED_EVENTS
            or sid is None
            or not self.manager.is_connected(sid, "/")
        ):
            return False
        ack_id = int(text[2:start]) if start > 2 else None
        task = asyncio.ensure_future(self._run_event(handler, sid, eio_sid, data, ack_id, outbound))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)
        return True

    async def _run_event(
        self,
        handler: Callable[..., Awaitable[Any]],
        sid: str,
        eio_sid: str,
        data: list[Any],
        ack_id: int | None,
        outbound: Outbound,
    ) -> None:
        result = await handler(sid, *data[1:])
        if ack_id is None:
            return
        args = [] if result is None else list(result) if isinstance(result, tuple) else [result]
        try:
            encoded = self.json_wire.encode(args)  # type: ignore[union-attr]
        except TypeError:
            # bytes in the answer (history published by a msgpack client): a binary ack,
            # which python-socketio encodes with its attachments.
            ack = self.packet_class(sio_packet.ACK, namespace="/", id=ack_id, data=args)
            await self._send_packet(eio_sid, ack)
            return
        outbound.write(engineio_frame(f"43{ack_id}{encoded}"))

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        try:
            if data == MALFORMED[1:]:
                raise ProtocolError("malformed engine.io frame")
            if self._discard.get(eio_sid) and isinstance(data, bytes):
                self._discard[eio_sid] -= 1
                return
            if eio_sid in self._binary_packet:
                await self._attachment(eio_sid, data)
                return
            if len(data) > self._max_payload:
                pkt = self.packet_class(encoded_packet=data)
                if len(data) > self._limit_of(pkt):
                    await self._refuse(eio_sid, pkt)
                    return
            await super()._handle_eio_message(eio_sid, data)
            pending = self._binary_packet.get(eio_sid)
            if pending is not None:
                self._pending_bytes[eio_sid] = len(data)
                if pending.attachment_count > MAX_ATTACHMENTS:
                    del self._binary_packet[eio_sid]
                    raise ProtocolError(f"{pending.attachment_count} attachments announced")
        except Exception as exc:
            await self.protocol_error(eio_sid, exc)

    async def _attachment(self, eio_sid: str, data: str | bytes) -> None:
        if isinstance(data, str):
            # A text packet while attachments are due: the header lied about its count.
            del self._binary_packet[eio_sid]
            raise ProtocolError("text packet while binary attachments were expected")
        size = self._pending_bytes.get(eio_sid, 0) + len(data)
        self._pending_bytes[eio_sid] = size
        if size > self._limit_of(self._binary_packet[eio_sid]):
            pending = self._binary_packet.pop(eio_sid)
            self._discard[eio_sid] = pending.attachment_count - len(pending.attachments) - 1
            await self._refuse(eio_sid, pending)
            return
        await super()._handle_eio_message(eio_sid, data)

    def _limit_of(self, pkt: Any) -> int:
        """The size limit of a decoded packet: larger for the events that may carry it."""
        if (
            pkt.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT)
            and isinstance(pkt.data, list)
            and pkt.data
            and pkt.data[0] in self._large_events
        ):
            return self._max_large
        return self._max_payload

    async def _refuse(self, eio_sid: str, pkt: Any) -> None:
        """Answer an oversized event with ``payload_too_large`` (it never reaches a handler)."""
        self._count_error("payload_too_large")
        if pkt.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT) and pkt.id is not None:
            ack = error_ack(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"event payload is over the {self._limit_of(pkt)}-byte limit",
            )
            await self._send_packet(
                eio_sid,
                self.packet_class(sio_packet.ACK, namespace=pkt.namespace, id=pkt.id, data=[ack]),
            )

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._errors.pop(eio_sid, None)
        self._pending_bytes.pop(eio_sid, None)
        self._discard.pop(eio_sid, None)
        socket = self.eio.sockets.get(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)
        if socket is not None:
            # engine.io leaves the writer (and a pending long-poll GET) waiting up to ping
            # interval + timeout after a close; a None after the CLOSE packet ends them now.
            asyncio.get_running_loop().call_soon(socket.queue.put_nowait, None)

    async def bad_post(self, eio_sid: str) -> None:
        """A malformed long-polling POST (refused by the EngineGuard before engineio)."""
        if eio_sid in self.eio.sockets:
            await self.protocol_error(eio_sid, ProtocolError("malformed polling payload"))
        else:
            self._count_error("ProtocolError")

    async def protocol_error(self, eio_sid: str, exc: Exception) -> None:
        """Count, log once per client, and cut off a client that keeps sending garbage."""
        self._count_error(type(exc).__name__)
        errors = self._errors.get(eio_sid)
        if errors is None:
            errors = self._errors[eio_sid] = deque(maxlen=self._error_limit)
            sid = self.sid_of(eio_sid)
            extra = {"connection": sid} if sid else None
            log.warning("malformed packet from %s: %r", eio_sid, exc, extra=extra)
        now = time.monotonic()
        errors.append(now)
        if len(errors) >= self._error_limit and now - errors[0] <= _ERROR_WINDOW_S:
            self._errors.pop(eio_sid, None)
            await self.on_abuse(eio_sid)

    def close_transport(self, eio_sid: str) -> None:
        """Close a client's Engine.IO connection without waiting for the client to take the
        CLOSE packet. Over long-polling that takes a GET, and with ``async_handlers`` off the
        POST that brought the last straw is still being handled: waiting there would hang it
        for good. The wait is bounded by one heartbeat, after which the client is gone anyway.
        """
        task = asyncio.ensure_future(self._close_within_heartbeat(eio_sid))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _close_within_heartbeat(self, eio_sid: str) -> None:
        heartbeat = self.eio.ping_interval + self.eio.ping_timeout
        try:
            await asyncio.wait_for(self.eio.disconnect(eio_sid), heartbeat)
        except TimeoutError:
            log.debug("%s did not collect its CLOSE packet", eio_sid)

    def sid_of(self, eio_sid: str) -> str | None:
        sid: str | None = self.manager.sid_from_eio_sid(eio_sid, "/")
        return sid
