"""Delivery of publications to this node's subscribers: encoded and framed once.

A publication becomes one Socket.IO packet, one Engine.IO packet and one websocket frame,
whatever the number of recipients; each websocket recipient gets those bytes appended to its
``Outbound`` (no task, no queue, no re-encoding). Recipients the fast path has not taken over
(long-polling, or a websocket still being set up) get the same Engine.IO packet through
python-socketio's own queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from realtime.broker import Publication
from server.fastpath import FastPath
from server.metrics import Metrics
from server.socket_server import TandemSocketServer
from server.wsframe import engineio_frame


class SocketDelivery:
    def __init__(
        self,
        sio: TandemSocketServer,
        fast: FastPath,
        metrics: Metrics,
        *,
        latest_value_events: Callable[[str], Collection[str]] = lambda channel: (),
        on_delivered: Callable[[Publication, int], None] | None = None,
    ) -> None:
        self._sio = sio
        self._fast = fast
        self._metrics = metrics
        # A channel's event types where only the newest value matters (progress, positions):
        # a client that falls behind may skip to the newest one of its channel.
        self._latest = latest_value_events
        # Told after each delivery (delivery receipts); must not block.
        self._on_delivered = on_delivered

    async def __call__(self, pub: Publication, recipients: Collection[str]) -> None:
        envelope = pub.envelope()
        key = None
        if pub.event in self._latest(pub.channel):
            # Tells clients that an offset gap before this event is coalescing, not loss.
            envelope["latest"] = True
            key = pub.event
        sio = self._sio
        encoded = self._encode(pub.event, envelope)
        if isinstance(encoded, list):  # binary attachments: python-socketio's own path
            await sio.emit(pub.event, envelope, to=list(recipients))
        else:
            await self._deliver(pub.channel, key, encoded, recipients)
        self._metrics.deliveries.inc(len(recipients))
        if self._on_delivered is not None:
            self._on_delivered(pub, len(recipients))
        self._metrics.latency.observe(max(0.0, time.time() - pub.ts))

    def _encode(self, event: str, envelope: dict[str, Any]) -> str | bytes | list[Any]:
        """The Socket.IO EVENT packet, as python-socketio's packet class would encode it."""
        wire = self._sio.json_wire
        if wire is not None:
            try:
                # Not the packet class: it scans the data for bytes before encoding.
                return "2" + wire.encode([event, envelope])
            except TypeError:
                pass  # bytes in the data: a binary event with attachments
        encoded: str | bytes | list[Any] = self._sio.packet_class(
            sio_packet.EVENT, namespace="/", data=[event, envelope]
        ).encode()
        return encoded

    async def _deliver(
        self, channel: str, key: str | None, encoded: str | bytes, recipients: Collection[str]
    ) -> None:
        eio_sids = self._sio.manager.rooms.get("/", {}).get(None, {})
        outbound_of = self._fast.outbound
        data: bytes | None = None
        queued: list[str] = []
        for sid in recipients:
            eio_sid = eio_sids.get(sid)
            if eio_sid is None:
                continue
            outbound = outbound_of(eio_sid)
            if outbound is None:
                queued.append(eio_sid)
                continue
            if data is None:
                # Not pkt.encode(): Engine.IO caches that, and long-polling needs base64.
                data = engineio_frame(f"4{encoded}" if isinstance(encoded, str) else encoded)
            outbound.write(data, channel, key)
        pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        for eio_sid in queued:
            # No await suspends here in practice (an unbounded queue put), so the order of
            # publications per connection is the order of these calls.
            await self._sio.eio.send_packet(eio_sid, pkt)
