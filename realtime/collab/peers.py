"""The PeerLink: this node's side of the document bus, as the engine uses it.

Publishing is at most once (a message lost while the bus is down is carried by the next
state-vector exchange), so a publish never fails the caller. Lost messages are healed by
asking the peers for what this node lacks (``request_state``) on load, after the bus
reconnects, and every ``anti_entropy_interval`` for documents that changed.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack

from realtime.collab import crdt
from realtime.collab.bus import BusKind, BusMessage, BusUnavailable, DocBus
from realtime.collab.room import Room

log = logging.getLogger(__name__)


class PeerLink:
    def __init__(self, bus: DocBus, node_id: str) -> None:
        self._bus = bus
        self._node = node_id

    async def publish_to(self, room: Room, kind: BusKind, payload: bytes) -> None:
        await self.publish(BusMessage(kind, room.doc_id, self._node, room.epoch, payload))

    async def publish(self, message: BusMessage) -> None:
        try:
            await self._bus.publish(message)
        except BusUnavailable as exc:
            # At most once anyway: the next state-vector exchange carries it.
            log.debug("document bus unavailable (%s)", exc)

    async def announce(self, doc_id: str, epoch: str, fields: dict[str, Any]) -> None:
        """Tell the other nodes the document was deleted or someone's access changed."""
        payload = msgpack.packb(fields)
        await self.publish(BusMessage(BusKind.ACCESS, doc_id, self._node, epoch, payload))

    async def request_state(self, room: Room) -> None:
        room.sync_replies = 0
        await self.publish_to(room, BusKind.SV_REQUEST, room.doc.get_state())

    async def answer_state_vector(self, room: Room, sv: bytes) -> None:
        try:
            diff = room.doc.get_update(sv)
        except ValueError:
            log.warning("dropping a malformed state vector for %s", room.doc_id)
            return
        if diff != crdt.EMPTY_UPDATE:
            await self.publish_to(room, BusKind.UPDATE, diff)

    async def answer_request(self, room: Room, sv: bytes) -> None:
        """A peer sent its state vector: send it what it lacks, then this node's own."""
        await self.answer_state_vector(room, sv)
        await self.publish_to(room, BusKind.SV_REPLY, room.doc.get_state())
        # A node that just loaded the document knows nobody's cursor yet.
        clients = room.local_clients()
        if clients:
            update = room.awareness.encode_awareness_update(clients)
            await self.publish_to(room, BusKind.AWARENESS, update)

    async def take_reply(self, room: Room, sv: bytes) -> None:
        """A peer answered this node's request: send it what it lacks; the room is synced."""
        await self.answer_state_vector(room, sv)
        room.sync_replies += 1
        if room.sync_replies >= 1:
            room.synced.set()

    async def anti_entropy_round(self, rooms: list[Room]) -> None:
        for room in rooms:
            if room.changed:
                room.changed = False
                await self.request_state(room)
