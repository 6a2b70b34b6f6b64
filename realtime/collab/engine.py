"""The CollabEngine: this node's open documents, kept in sync with clients, peers and the store.

This module is the facade the server talks to (joins, edits, reads, access changes, what the
bus delivers); each concern it puts together lives in a module of its own:

- ``room_table``: one ``Room`` per open document, loaded once however many join at the same
  moment (single flight), dropped ``unload_grace`` seconds after the last member left
  (flushed and reconciled first; a join during an unload waits for it, then loads afresh).
- ``updates``: a client's update is applied (invalid bytes change nothing), buffered for the
  log, sent to the other local members and published raw to the peers. Peers apply what they
  hear and pass on only what integrated; their own echoes never reach them (the bus drops
  them).
- ``keeper``: the log gets each node's own clients' raw updates in batches
  (``flush_interval``), never a commit per keystroke. A crash loses at most the last batch of
  this node, and only until its clients reconnect (they send what the server lacks on join)
  or another node holding the document reconciles: on unload and every
  ``reconcile_interval`` it appends whatever the store lacks of its copy.
- ``peers``: lost bus messages are healed by a state-vector exchange: on load (waiting up to
  ``initial_sync_timeout`` for the peers), every ``anti_entropy_interval`` for documents
  that changed, and after the bus reconnects.
- ``awareness``: awareness (cursors, names, typing) is relayed, never stored. A connection's
  states go the moment it leaves; those of clients on other nodes go when not renewed within
  ``awareness_ttl`` (their node says which it still holds every third of that).
- ``closing``: sessions on a deleted document, or of a member who lost access, are closed
  on every node holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pycrdt import Doc

from domain.documents import Document, DocumentStore, Role
from domain.errors import InvalidPayload, NotFound, PermissionDenied
from domain.graceful import finish_or_cancel
from realtime.collab import crdt
from realtime.collab.awareness import MAX_CLIENTS_PER_CONNECTION, AwarenessRelay
from realtime.collab.bus import BusKind, BusMessage, DocBus, MessageHandler, ReconnectHandler
from realtime.collab.clients import Send
from realtime.collab.closing import SessionCloser
from realtime.collab.keeper import DocKeeper
from realtime.collab.options import CollabOptions, CollabStats
from realtime.collab.peers import PeerLink
from realtime.collab.room import Member, Room
from realtime.collab.room_table import RoomTable
from realtime.collab.updates import UpdateFlow
from realtime.periodic import Periodic

# These names were defined here before they had modules of their own; importers keep them.
__all__ = [
    "MAX_CLIENTS_PER_CONNECTION",
    "CollabEngine",
    "CollabOptions",
    "CollabStats",
    "JoinAnswer",
    "Send",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    doc_id: str
    epoch: str
    reset: bool
    role: Role
    format: str
    update: bytes
    sv: bytes
    awareness: bytes


class CollabEngine:
    def __init__(
        self,
        store: DocumentStore,
        bus_factory: Callable[[MessageHandler, ReconnectHandler], DocBus],
        send: Send,
        options: CollabOptions,
    ) -> None:
        self._store = store
        self._bus = bus_factory(self.on_bus_message, self.on_bus_reconnect)
        self.options = options
        self.stats = CollabStats()
        self._docs_of: dict[str, set[str]] = {}  # connection -> open documents
        self._keeper = DocKeeper(
            store, options, self.stats, on_gone=self._deleted, spawn=self._spawn
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        o = options
        self._peers = PeerLink(self._bus, o.node_id)
        self._table = RoomTable(
            store,
            self._bus,
            self._keeper,
            self._peers,
            self.stats,
            unload_grace=o.unload_grace,
            spawn=self._spawn,
        )
        # The table owns these; the engine reads them on every call (and tests inspect them).
        self._rooms = self._table.rooms
        self._unloading = self._table.unloading
        self._updates = UpdateFlow(
            send, self._peers, self._keeper, self.stats, max_doc_bytes=o.max_doc_bytes
        )
        self._awareness = AwarenessRelay(send, self._peers, ttl=o.awareness_ttl)
        self._closer = SessionCloser(self._rooms, self._bus, self._keeper, send, leave=self.leave)
        # Stopping lets a round under way finish (a flush cut off mid-transaction would
        # leave its connection holding SQLite's write lock, and lose the batch).
        self._loops = [
            Periodic(self._flush_round, o.flush_interval, name="collab-flush"),
            Periodic(
                self._sweep_awareness, max(0.2, o.awareness_ttl / 10), name="collab-awareness"
            ),
            Periodic(self._anti_entropy_round, o.anti_entropy_interval, name="collab-sync"),
            Periodic(self._reconcile_round, o.reconcile_interval, name="collab-reconcile"),
        ]

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._bus.__aenter__()
        for loop in self._loops:
            loop.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Flush and reconcile every open document (a SIGTERM loses nothing), then stop."""
        for loop in self._loops:
            await loop.stop()
        await finish_or_cancel(list(self._tasks), 5.0)
        try:
            await self._keeper.flush(list(self._rooms.values()))
            for room in list(self._rooms.values()):
                if room.remote:
                    await self._keeper.reconcile(room)
        except Exception:
            log.exception("could not store every open document on shutdown")
        for room in self._rooms.values():
            if room.unload_timer is not None:
                room.unload_timer.cancel()
        self._rooms.clear()
        await self._bus.__aexit__(None, None, None)

    # -- what clients do --------------------------------------------------------------------

    async def join(
        self,
        conn: str,
        user: str,
        doc_id: str,
        role: Role,
        *,
        sv: bytes | None,
        epoch: str | None,
        awareness: bytes | None,
        granted: Role | None = None,
    ) -> JoinAnswer:
        """``role``: the caller's role now; ``granted``: what its token gives by itself
        (kept when its membership changes while it edits)."""
        entries = crdt.awareness_clients(awareness, max_clients=4) if awareness else []
        room = await self._table.acquire(doc_id)
        try:
            reset = epoch is not None and epoch != room.epoch
            try:
                update = room.doc.get_update(None if reset or not sv else sv)
            except ValueError:
                raise InvalidPayload("sv is not a Yjs state vector") from None
            # From here on nothing awaits before the member is in: no update can fall between
            # the diff and the membership.
            member = room.members.get(conn)
            if member is None:
                member = room.members[conn] = Member(conn, user, role, granted)
                self._docs_of.setdefault(conn, set()).add(doc_id)
            member.role, member.granted = role, granted
            answer = JoinAnswer(
                doc_id=doc_id,
                epoch=room.epoch,
                reset=reset,
                role=role,
                format=room.format.value,
                update=update,
                sv=room.doc.get_state(),
                awareness=room.awareness_state(),
            )
        finally:
            self._table.release_if_idle(room)
        if awareness and entries:
            await self._awareness.from_client(room, member, awareness, entries)
        return answer

    async def update(self, conn: str, doc_id: str, update: bytes) -> None:
        room, member = self._member(conn, doc_id)
        if not member.role.can_edit:
            raise PermissionDenied(f"{member.user} may read document {doc_id!r} but not edit it")
        await self._updates.apply_local(room, update, exclude=conn)

    async def sync(self, conn: str, doc_id: str, sv: bytes) -> tuple[bytes, bytes]:
        room, _ = self._member(conn, doc_id)
        try:
            return room.doc.get_update(sv), room.doc.get_state()
        except ValueError:
            raise InvalidPayload("sv is not a Yjs state vector") from None

    async def awareness(self, conn: str, doc_id: str, update: bytes) -> None:
        room, member = self._member(conn, doc_id)
        entries = crdt.awareness_clients(update, max_clients=4)
        await self._awareness.from_client(room, member, update, entries)

    async def leave(self, conn: str, doc_id: str) -> None:
        room = self._rooms.get(doc_id)
        docs = self._docs_of.get(conn)
        if docs is not None:
            docs.discard(doc_id)
            if not docs:
                del self._docs_of[conn]
        if room is None:
            return
        member = room.members.pop(conn, None)
        if member is None:
            return
        gone = room.remove_clients(sorted(member.clients), conn)
        self._table.release_if_idle(room)
        if gone is not None:
            await self._awareness.relay(room, gone, exclude=None)

    async def leave_all(self, conn: str) -> None:
        for doc_id in list(self._docs_of.get(conn, ())):
            await self.leave(conn, doc_id)

    def members_of(self, doc_id: str) -> list[Member]:
        room = self._rooms.get(doc_id)
        return list(room.members.values()) if room is not None else []

    # -- what the server does ---------------------------------------------------------------

    async def create(self, document: Document, content: str | None) -> None:
        """Store a new document; ``content`` becomes its initial Yjs state (only now)."""
        state = crdt.initial_state(document.format, content) if content else None
        await self._store.create(document, state)

    async def edit(self, doc_id: str, change: Callable[[Room, Doc[Any]], None]) -> int:
        """Change the document on the server, as a client would: ``change`` edits a copy
        (``Doc``) of the live document, and the update it makes goes the same way as a
        client's (checked, applied, logged, sent, published). Returns the size afterwards."""
        async with self.borrow(doc_id) as room:
            update = crdt.edit_of(room.doc.get_update(), lambda copy: change(room, copy))
            await self._updates.apply_local(room, update, exclude=None)
            return room.exact_size()

    async def read(self, doc_id: str, read: Callable[[Room], T]) -> T:
        async with self.borrow(doc_id) as room:
            return read(room)

    @asynccontextmanager
    async def borrow(self, doc_id: str) -> AsyncIterator[Room]:
        """The live document, loaded (and synced with the peers) for server-side use."""
        room = await self._table.acquire(doc_id)
        room.holds += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.initial_sync_timeout):
                    await room.synced.wait()
            yield room
        finally:
            room.holds -= 1
            self._table.release_if_idle(room)

    async def deleted(self, doc_id: str) -> None:
        """The document is gone: its members here and on every other node are told
        (``doc.closed``, ``not_found``) and it is dropped without being stored."""
        await self._announce(doc_id, {"user": None})
        await self._deleted(doc_id)

    async def access_changed(self, doc_id: str, user: str, membership: Role | None) -> None:
        """``user``'s membership became ``membership`` (None: removed). Their sessions here
        and on every other node keep the strongest of it and what their token grants; one
        left with no role is closed (``doc.closed``, ``permission_denied``)."""
        await self._announce(doc_id, {"user": user, "role": membership})
        await self._closer.access_changed(doc_id, user, membership)

    async def _announce(self, doc_id: str, fields: dict[str, Any]) -> None:
        room = self._rooms.get(doc_id)
        epoch = room.epoch if room is not None else ""
        await self._peers.announce(doc_id, epoch, fields)

    # -- the bus ----------------------------------------------------------------------------

    async def on_bus_message(self, message: BusMessage) -> None:
        if message.kind is BusKind.ACCESS:
            await self._closer.on_access_message(message)
            return
        room = self._rooms.get(message.doc_id)
        if room is None or message.epoch != room.epoch:
            return
        match message.kind:
            case BusKind.UPDATE:
                await self._updates.apply_remote(room, message.payload)
            case BusKind.AWARENESS:
                await self._awareness.from_peer(room, message.payload, message.node)
            case BusKind.SV_REQUEST:
                await self._peers.answer_request(room, message.payload)
            case BusKind.SV_REPLY:
                await self._peers.take_reply(room, message.payload)
            case BusKind.ALIVE:
                self._awareness.renewed(room, message.payload)

    async def on_bus_reconnect(self) -> None:
        """Whatever was published while the bus was down is lost: exchange state vectors."""
        for room in list(self._rooms.values()):
            await self._peers.request_state(room)

    # -- internals -------------------------------------------------------------------------

    @property
    def open_documents(self) -> int:
        return len(self._rooms)

    def _member(self, conn: str, doc_id: str) -> tuple[Room, Member]:
        room = self._rooms.get(doc_id)
        member = room.members.get(conn) if room is not None else None
        if room is None or member is None:
            raise NotFound(f"join document {doc_id!r} first (doc.join)")
        return room, member

    async def _deleted(self, doc_id: str) -> None:
        await self._closer.deleted(doc_id)

    # -- internals: the periodic rounds -----------------------------------------------------

    async def _sweep_awareness(self) -> None:
        await self._awareness.sweep(list(self._rooms.values()))

    async def _anti_entropy_round(self) -> None:
        await self._peers.anti_entropy_round(list(self._rooms.values()))

    async def _flush_round(self) -> None:
        await self._keeper.flush_round(list(self._rooms.values()))

    async def _reconcile_round(self) -> None:
        await self._keeper.reconcile_round(list(self._rooms.values()))

    # -- internals: tasks -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
