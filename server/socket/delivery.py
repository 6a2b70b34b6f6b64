"""Delivery of publications to this node's subscribers: encoded and framed once.

A publication becomes one Socket.IO packet, one Engine.IO packet and one websocket frame,
whatever the number of recipients; each websocket recipient gets those bytes appended to its
``Outbound`` (no task, no queue, no re-encoding). Long-polling recipients get the same
Engine.IO packet in their session's queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from realtime.broker import Publication
from server.metrics import Metrics
from server.transport.sockets import SocketServer


class SocketDelivery:
    def __init__(
        self,
        sio: SocketServer,
        metrics: Metrics,
        *,
        latest_value_events: Callable[[str], Collection[str]] = lambda channel: (),
        on_delivered: Callable[[Publication, int], None] | None = None,
    ) -> None:
        self._sio = sio
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
        sio.broadcast(sio.event_messages(pub.event, envelope), recipients, pub.channel, key)
        self._metrics.deliveries.inc(len(recipients))
        if self._on_delivered is not None:
            self._on_delivered(pub, len(recipients))
        self._metrics.latency.observe(max(0.0, time.time() - pub.ts))
