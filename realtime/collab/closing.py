"""The SessionCloser: closing this node's sessions on a document that was deleted, or whose
member lost access, whether the news came from this node's server or from a peer.

Closed connections are told (``doc.closed`` with ``not_found`` or ``permission_denied``)
and leave the document. A deleted document is dropped without being stored: its pending
updates have nowhere to go.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgpack

from domain.documents import Role, strongest
from realtime.collab.bus import BusMessage, DocBus
from realtime.collab.clients import Send
from realtime.collab.keeper import DocKeeper
from realtime.collab.room import Member, Room

log = logging.getLogger(__name__)


class SessionCloser:
    def __init__(
        self,
        rooms: dict[str, Room],
        bus: DocBus,
        keeper: DocKeeper,
        send: Send,
        *,
        leave: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self._rooms = rooms  # the engine's open documents (a deleted one is removed here)
        self._bus = bus
        self._keeper = keeper
        self._send = send
        self._leave = leave

    async def on_access_message(self, message: BusMessage) -> None:
        """A peer announced a deletion (``user`` None) or a change of someone's access."""
        try:
            fields = msgpack.unpackb(message.payload)
            user = fields["user"]
            membership = None if fields.get("role") is None else Role(fields["role"])
        except Exception:
            log.warning("dropping a malformed access message for %s", message.doc_id)
            return
        if user is None:
            await self.deleted(message.doc_id)
        else:
            await self.access_changed(message.doc_id, str(user), membership)

    async def deleted(self, doc_id: str) -> None:
        room = self._rooms.get(doc_id)
        if room is None:
            return
        await self._close(room, list(room.members.values()), "not_found", "deleted")
        if self._rooms.get(doc_id) is room:
            self._keeper.discard(room)  # its pending updates have nowhere to go
            if room.unload_timer is not None:
                room.unload_timer.cancel()
            del self._rooms[doc_id]
            await self._bus.unsubscribe(doc_id)

    async def access_changed(self, doc_id: str, user: str, membership: Role | None) -> None:
        room = self._rooms.get(doc_id)
        if room is None:
            return
        gone = []
        for member in room.members.values():
            if member.user == user:
                role = strongest(member.granted, membership)
                if role is None:
                    gone.append(member)
                else:
                    member.role = role
        await self._close(room, gone, "permission_denied", "access removed")

    async def _close(self, room: Room, members: list[Member], code: str, reason: str) -> None:
        if not members:
            return
        message = f"document {room.doc_id!r}: {reason}"
        payload = {"doc": room.doc_id, "code": code, "message": message}
        await self._send("doc.closed", payload, [m.conn for m in members])
        for member in members:
            await self._leave(member.conn, room.doc_id)
