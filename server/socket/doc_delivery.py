"""Document traffic to this node's members: a Socket.IO event with binary data, encoded and
framed once however many members receive it.

The packets (a binary event is two with the JSON serializer: the header and the
attachment) are encoded once, framed once, and the frames appended to each websocket's
``Outbound`` together; long-polling members get the same Engine.IO packets in their
session's queue.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from server.metrics import Metrics
from server.transport.sockets import SocketServer


class DocDelivery:
    def __init__(self, sio: SocketServer, metrics: Metrics) -> None:
        self._sio = sio
        self._metrics = metrics

    async def __call__(self, event: str, payload: dict[str, Any], conns: Collection[str]) -> None:
        self._sio.broadcast(self._sio.event_messages(event, payload), conns)
        self._metrics.doc_deliveries.labels(event).inc(len(conns))
