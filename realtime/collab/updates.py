"""The UpdateFlow: where a document update goes once it reaches this node.

- A client's update is checked against the size and pending-store bounds, applied (invalid
  bytes change nothing), held for the log, sent to the other local members and published raw
  to the peers. One carrying nothing new is dropped (not stored, not relayed).
- A peer's update is applied and only what integrated is passed on to the local members; it
  is not stored here (the node whose client sent it does, or a reconcile does).
"""

from __future__ import annotations

import logging

from domain.errors import InvalidPayload, PayloadTooLarge
from realtime.collab import crdt
from realtime.collab.bus import BusKind
from realtime.collab.clients import Send, doc_payload
from realtime.collab.keeper import DocKeeper
from realtime.collab.options import CollabStats
from realtime.collab.peers import PeerLink
from realtime.collab.room import Room

log = logging.getLogger(__name__)


class UpdateFlow:
    def __init__(
        self,
        send: Send,
        peers: PeerLink,
        keeper: DocKeeper,
        stats: CollabStats,
        *,
        max_doc_bytes: int,
    ) -> None:
        self._send = send
        self._peers = peers
        self._keeper = keeper
        self._stats = stats
        self._max_doc_bytes = max_doc_bytes

    async def apply_local(self, room: Room, update: bytes, *, exclude: str | None) -> None:
        self._check_capacity(room, len(update))
        try:
            integrated = room.apply(update)
        except ValueError:
            self._stats.invalid += 1
            raise InvalidPayload("update is not a Yjs update; the document is unchanged") from None
        if integrated is None and crdt.redundant(room.doc, update):
            # A client re-sending what is here already (its join handshake after a reconnect
            # carries its whole delete set): nothing to store or to tell anyone.
            self._stats.redundant += 1
            return
        self._stats.updates += 1
        room.size += len(update)
        self._keeper.hold(room, update)
        if integrated is not None:
            recipients = [conn for conn in room.members if conn != exclude]
            if exclude is not None and integrated != update:
                # Usually the same bytes. When not, the update may have released structs
                # that were waiting for it (pending), which its sender never had: it gets
                # them too (anything it already holds is ignored by its Yjs).
                recipients.append(exclude)
                self._stats.echoes += 1
            if recipients:
                await self._send("doc.update", doc_payload(room, integrated), recipients)
        await self._peers.publish_to(room, BusKind.UPDATE, update)

    async def apply_remote(self, room: Room, update: bytes) -> None:
        try:
            integrated = room.apply(update)
        except ValueError:
            self._stats.invalid += 1
            log.warning("dropping an invalid update for %s from the bus", room.doc_id)
            return
        room.remote = True
        if integrated is None:
            return
        self._stats.remote_updates += 1
        room.size += len(integrated)
        if room.members:
            await self._send("doc.update", doc_payload(room, integrated), room.members)

    def _check_capacity(self, room: Room, incoming: int) -> None:
        cap = self._max_doc_bytes
        if room.size + incoming > cap and room.exact_size() + incoming > cap:
            raise PayloadTooLarge(
                f"document {room.doc_id!r} would exceed its {cap}-byte size limit"
            )
        self._keeper.check_room(incoming)
