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
from server.transport.frames import engineio_frame
from server.transport.packets import EVENT, Packet
from server.transport.sockets import SocketServer


class DocDelivery:
    def __init__(self, sio: SocketServer, metrics: Metrics) -> None:
        self._sio = sio
        self._metrics = metrics

    async def __call__(self, event: str, payload: dict[str, Any], conns: Collection[str]) -> None:
        messages = [
            "4" + m if isinstance(m, str) else m
            for m in self._sio.codec.encode(Packet(EVENT, data=[event, payload]))
        ]
        connections = self._sio.connections
        frames: bytes | None = None
        for sid in conns:
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
            outbound.write(frames)
        self._metrics.doc_deliveries.labels(event).inc(len(conns))
