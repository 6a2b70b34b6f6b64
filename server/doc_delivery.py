"""Document traffic to this node's members: a Socket.IO event with binary data, encoded and
framed once however many members receive it.

``sio.emit`` to a list of members would start a task per member and per packet (a binary
event is two packets with the JSON serializer: the header and the attachment). Here the
packets are encoded once, framed once, and the frames appended to each websocket's
``Outbound`` together; members the fast path has not taken over (long-polling, a websocket
still upgrading) get the same Engine.IO packets through python-socketio's queue.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from server.fastpath import FastPath
from server.metrics import Metrics
from server.socket_server import TandemSocketServer
from server.wsframe import engineio_frame


class DocDelivery:
    def __init__(self, sio: TandemSocketServer, fast: FastPath, metrics: Metrics) -> None:
        self._sio = sio
        self._fast = fast
        self._metrics = metrics

    async def __call__(self, event: str, payload: dict[str, Any], conns: Collection[str]) -> None:
        encoded = self._sio.packet_class(
            sio_packet.EVENT, namespace="/", data=[event, payload]
        ).encode()
        packets: list[str | bytes] = encoded if isinstance(encoded, list) else [encoded]
        eio_sids = self._sio.manager.rooms.get("/", {}).get(None, {})
        frames: bytes | None = None
        queued: list[str] = []
        for sid in conns:
            eio_sid = eio_sids.get(sid)
            if eio_sid is None:
                continue
            outbound = self._fast.outbound(eio_sid)
            if outbound is None:
                queued.append(eio_sid)
                continue
            if frames is None:
                frames = b"".join(
                    engineio_frame(f"4{p}" if isinstance(p, str) else p) for p in packets
                )
            outbound.write(frames)
        if queued:
            eio_packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in packets]
            for eio_sid in queued:
                for pkt in eio_packets:
                    await self._sio.eio.send_packet(eio_sid, pkt)
        self._metrics.doc_deliveries.labels(event).inc(len(conns))
