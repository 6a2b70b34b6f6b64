"""The AwarenessRelay: cursors, names and typing states, relayed between clients and nodes.

Awareness is never stored. A connection may only set or remove the states it introduced
(at most ``MAX_CLIENTS_PER_CONNECTION``); they go the moment it leaves. States of clients on
other nodes go when not renewed within ``awareness_ttl``: each node says which it still
holds every third of that (``BusKind.ALIVE``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

import msgpack

from domain.errors import DomainError, InvalidPayload, PermissionDenied
from realtime.collab import crdt
from realtime.collab.bus import BusKind
from realtime.collab.clients import Send, doc_payload
from realtime.collab.peers import PeerLink
from realtime.collab.room import Member, Room

log = logging.getLogger(__name__)

MAX_CLIENTS_PER_CONNECTION = 8


class AwarenessRelay:
    def __init__(self, send: Send, peers: PeerLink, *, ttl: float) -> None:
        self._send = send
        self._peers = peers
        self._ttl = ttl
        self._announced = 0.0  # when this node last said which awareness states it holds

    async def from_client(
        self, room: Room, member: Member, update: bytes, entries: Sequence[crdt.AwarenessEntry]
    ) -> None:
        for entry in entries:
            owner = room.owner_of(entry.client)
            if owner is not None and owner is not member:
                raise PermissionDenied("awareness states of another connection")
        for entry in entries:
            if entry.removed:
                member.clients.discard(entry.client)
            elif entry.client not in member.clients:
                if len(member.clients) >= MAX_CLIENTS_PER_CONNECTION:
                    raise InvalidPayload(
                        f"a connection may hold {MAX_CLIENTS_PER_CONNECTION} awareness states"
                    )
                member.clients.add(entry.client)
                room.seen.pop(entry.client, None)
        room.awareness.apply_awareness_update(update, member.conn)
        await self.relay(room, update, exclude=member.conn)

    async def from_peer(self, room: Room, update: bytes, node: str) -> None:
        try:
            forward = room.apply_remote_awareness(update, node)
        except DomainError:
            log.warning("dropping a malformed awareness update for %s", room.doc_id)
            return
        if forward is not None:
            await self._send("doc.awareness", doc_payload(room, forward), room.members)

    @staticmethod
    def renewed(room: Room, payload: bytes) -> None:
        """A peer still holds these clients' states (``BusKind.ALIVE``); a bad list is ignored."""
        with contextlib.suppress(Exception):
            room.renew([int(c) for c in msgpack.unpackb(payload)])

    async def relay(self, room: Room, update: bytes, *, exclude: str | None) -> None:
        recipients = [conn for conn in room.members if conn != exclude]
        if recipients:
            await self._send("doc.awareness", doc_payload(room, update), recipients)
        await self._peers.publish_to(room, BusKind.AWARENESS, update)

    async def sweep(self, rooms: list[Room]) -> None:
        ttl = self._ttl
        now = time.monotonic()
        announce = now - self._announced >= ttl / 3
        if announce:
            self._announced = now
        for room in rooms:
            gone = room.remove_clients(room.expired_clients(ttl), "timeout")
            if gone is not None and room.members:
                await self._send("doc.awareness", doc_payload(room, gone), room.members)
            clients = room.local_clients()
            if announce and clients:
                await self._peers.publish_to(room, BusKind.ALIVE, msgpack.packb(clients))
