"""The CollabEngine: this node's open documents, kept in sync with clients, peers and the store.

Per document (a ``Room``): one Y.Doc and one Awareness, loaded once however many join at the
same moment (single flight), dropped ``unload_grace`` seconds after the last member left
(flushed and reconciled first; a join during an unload waits for it, then loads afresh).

- A client's update is applied (invalid bytes change nothing), buffered for the log, sent to
  the other local members and published raw to the peers. Peers apply what they hear and
  pass on only what integrated; their own echoes never reach them (the bus drops them).
- The log gets each node's own clients' raw updates in batches (``flush_interval``), never a
  commit per keystroke. A crash loses at most the last batch of this node, and only until
  its clients reconnect (they send what the server lacks on join) or another node holding
  the document reconciles: on unload and every ``reconcile_interval`` it appends whatever
  the store lacks of its copy.
- Lost bus messages are healed by a state-vector exchange: on load (waiting up to
  ``initial_sync_timeout`` for the peers), every ``anti_entropy_interval`` for documents
  that changed, and after the bus reconnects.
- Awareness (cursors, names, typing) is relayed, never stored. A connection's states go the
  moment it leaves; those of clients on other nodes go when not renewed within
  ``awareness_ttl`` (their node says which it still holds every third of that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import msgpack
from pycrdt import Doc

from domain.documents import Document, DocumentStore, Role, strongest
from domain.errors import (
    DomainError,
    InvalidPayload,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
)
from domain.graceful import finish_or_cancel
from realtime.collab import crdt
from realtime.collab.bus import (
    BusKind,
    BusMessage,
    BusUnavailable,
    DocBus,
    MessageHandler,
    ReconnectHandler,
)
from realtime.collab.keeper import DocKeeper
from realtime.collab.room import Member, Room
from realtime.periodic import Periodic

log = logging.getLogger(__name__)

# Sends ``event`` with ``payload`` to each of these local connections.
Send = Callable[[str, dict[str, Any], Collection[str]], Awaitable[None]]
T = TypeVar("T")

MAX_CLIENTS_PER_CONNECTION = 8


@dataclass(frozen=True, slots=True)
class CollabOptions:
    node_id: str
    max_doc_bytes: int = 4 * 1024 * 1024
    flush_interval: float = 0.25
    # Unflushed bytes this node may hold while the store is down before refusing updates.
    max_pending_bytes: int = 64 * 1024 * 1024
    unload_grace: float = 30.0
    reconcile_interval: float = 60.0
    anti_entropy_interval: float = 30.0
    awareness_ttl: float = 30.0
    initial_sync_timeout: float = 1.0
    # A log is folded into the snapshot once it is as large as the snapshot (so a document
    # is rewritten at most about once per its own size typed), at least this large...
    compact_min_bytes: int = 64 * 1024
    # ... or this long (each row is applied one by one when the document loads).
    compact_after_rows: int = 20_000


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


@dataclass(slots=True)
class CollabStats:
    updates: int = 0  # client updates applied
    remote_updates: int = 0  # updates from peers that integrated something
    repairs: int = 0  # reconciles that appended what the store lacked
    invalid: int = 0
    echoes: int = 0  # client updates whose integrated form went back to their sender
    redundant: int = 0  # client updates that carried nothing new (not stored, not relayed)
    flushed: int = 0
    flush_failures: int = 0
    compactions: int = 0
    loads: int = 0
    unloads: int = 0


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
        self._send = send
        self.options = options
        self.stats = CollabStats()
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._unloading: dict[str, asyncio.Future[None]] = {}
        self._docs_of: dict[str, set[str]] = {}  # connection -> open documents
        self._keeper = DocKeeper(
            store, options, self.stats, on_gone=self._deleted, spawn=self._spawn
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        o = options
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
        self._announced = 0.0  # when this node last said which awareness states it holds

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
        room = await self._acquire(doc_id)
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
            self._release_if_idle(room)
        if awareness and entries:
            await self._client_awareness(room, member, awareness, entries)
        return answer

    async def update(self, conn: str, doc_id: str, update: bytes) -> None:
        room, member = self._member(conn, doc_id)
        if not member.role.can_edit:
            raise PermissionDenied(f"{member.user} may read document {doc_id!r} but not edit it")
        await self._apply_local(room, update, exclude=conn)

    async def sync(self, conn: str, doc_id: str, sv: bytes) -> tuple[bytes, bytes]:
        room, _ = self._member(conn, doc_id)
        try:
            return room.doc.get_update(sv), room.doc.get_state()
        except ValueError:
            raise InvalidPayload("sv is not a Yjs state vector") from None

    async def awareness(self, conn: str, doc_id: str, update: bytes) -> None:
        room, member = self._member(conn, doc_id)
        entries = crdt.awareness_clients(update, max_clients=4)
        await self._client_awareness(room, member, update, entries)

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
        self._release_if_idle(room)
        if gone is not None:
            await self._relay_awareness(room, gone, exclude=None)

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
            await self._apply_local(room, update, exclude=None)
            return room.exact_size()

    async def read(self, doc_id: str, read: Callable[[Room], T]) -> T:
        async with self.borrow(doc_id) as room:
            return read(room)

    @asynccontextmanager
    async def borrow(self, doc_id: str) -> AsyncIterator[Room]:
        """The live document, loaded (and synced with the peers) for server-side use."""
        room = await self._acquire(doc_id)
        room.holds += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.initial_sync_timeout):
                    await room.synced.wait()
            yield room
        finally:
            room.holds -= 1
            self._release_if_idle(room)

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
        await self._access_changed(doc_id, user, membership)

    async def _announce(self, doc_id: str, fields: dict[str, Any]) -> None:
        room = self._rooms.get(doc_id)
        epoch = room.epoch if room is not None else ""
        payload = msgpack.packb(fields)
        await self._publish(BusMessage(BusKind.ACCESS, doc_id, self._node, epoch, payload))

    # -- the bus ----------------------------------------------------------------------------

    async def on_bus_message(self, message: BusMessage) -> None:
        if message.kind is BusKind.ACCESS:
            try:
                fields = msgpack.unpackb(message.payload)
                user = fields["user"]
                membership = None if fields.get("role") is None else Role(fields["role"])
            except Exception:
                log.warning("dropping a malformed access message for %s", message.doc_id)
                return
            if user is None:
                await self._deleted(message.doc_id)
            else:
                await self._access_changed(message.doc_id, str(user), membership)
            return
        room = self._rooms.get(message.doc_id)
        if room is None or message.epoch != room.epoch:
            return
        match message.kind:
            case BusKind.UPDATE:
                await self._apply_remote(room, message.payload)
            case BusKind.AWARENESS:
                try:
                    forward = room.apply_remote_awareness(message.payload, message.node)
                except DomainError:
                    log.warning("dropping a malformed awareness update for %s", room.doc_id)
                    return
                if forward is not None:
                    await self._send("doc.awareness", self._payload(room, forward), room.members)
            case BusKind.SV_REQUEST:
                await self._answer_state_vector(room, message.payload)
                await self._publish_to(room, BusKind.SV_REPLY, room.doc.get_state())
                # A node that just loaded the document knows nobody's cursor yet.
                clients = room.local_clients()
                if clients:
                    update = room.awareness.encode_awareness_update(clients)
                    await self._publish_to(room, BusKind.AWARENESS, update)
            case BusKind.SV_REPLY:
                await self._answer_state_vector(room, message.payload)
                room.sync_replies += 1
                if room.sync_replies >= 1:
                    room.synced.set()
            case BusKind.ALIVE:
                with contextlib.suppress(Exception):
                    room.renew([int(c) for c in msgpack.unpackb(message.payload)])

    async def on_bus_reconnect(self) -> None:
        """Whatever was published while the bus was down is lost: exchange state vectors."""
        for room in list(self._rooms.values()):
            await self._request_state(room)

    # -- internals: rooms -------------------------------------------------------------------

    @property
    def _node(self) -> str:
        return self.options.node_id

    @property
    def open_documents(self) -> int:
        return len(self._rooms)

    def _member(self, conn: str, doc_id: str) -> tuple[Room, Member]:
        room = self._rooms.get(doc_id)
        member = room.members.get(conn) if room is not None else None
        if room is None or member is None:
            raise NotFound(f"join document {doc_id!r} first (doc.join)")
        return room, member

    async def _acquire(self, doc_id: str) -> Room:
        """The loaded room (loading it once however many ask at the same time); the caller
        must make it non-idle (a member or a hold) or call ``_release_if_idle``."""
        while True:
            unloading = self._unloading.get(doc_id)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            room = self._rooms.get(doc_id)
            if room is not None:
                if room.unload_timer is not None:
                    room.unload_timer.cancel()
                    room.unload_timer = None
                return room
            loading = self._loading.get(doc_id)
            if loading is not None:
                await asyncio.shield(loading)
                continue
            future: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
            self._loading[doc_id] = future
            try:
                room = await self._load(doc_id)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: the waiters re-raise from their own load
                raise
            else:
                future.set_result(room)
            finally:
                del self._loading[doc_id]

    async def _load(self, doc_id: str) -> Room:
        # Subscribe first: what peers publish from now on is heard; what they published
        # before is in the store or comes with the state-vector exchange below.
        await self._bus.subscribe(doc_id)
        try:
            document = await self._store.get(doc_id)
            state = await self._store.load(doc_id) if document is not None else None
            if document is None or state is None:
                raise NotFound(f"no document {doc_id!r}")
            room = Room(doc_id, document.format, state)
        except BaseException:
            if doc_id not in self._rooms:
                await self._bus.unsubscribe(doc_id)
            raise
        self._rooms[doc_id] = room
        self.stats.loads += 1
        if await self._bus.peers(doc_id):
            await self._request_state(room)
        else:
            room.synced.set()
        self._keeper.compact_if_due(room)
        return room

    def _release_if_idle(self, room: Room) -> None:
        if not room.idle or room.unload_timer is not None:
            return
        if self._rooms.get(room.doc_id) is not room:
            return
        loop = asyncio.get_running_loop()
        room.unload_timer = loop.call_later(
            self.options.unload_grace, lambda: self._spawn(self._unload(room))
        )

    async def _unload(self, room: Room) -> None:
        room.unload_timer = None
        if not room.idle or self._rooms.get(room.doc_id) is not room:
            return
        doc_id = room.doc_id
        done = asyncio.get_running_loop().create_future()
        self._unloading[doc_id] = done
        del self._rooms[doc_id]
        try:
            await self._keeper.flush([room])
            if room.remote:
                await self._keeper.reconcile(room)
            await self._bus.unsubscribe(doc_id)
            self.stats.unloads += 1
        except Exception:
            # Its unflushed updates may exist nowhere else: keep it and try again later.
            log.exception("could not unload document %s; keeping it open", doc_id)
            self._rooms[doc_id] = room
            self._release_if_idle(room)
            self._spawn(self._request_state(room))  # it missed the bus meanwhile
        finally:
            del self._unloading[doc_id]
            done.set_result(None)

    async def _deleted(self, doc_id: str) -> None:
        room = self._rooms.get(doc_id)
        if room is None:
            return
        await self._close_members(room, list(room.members.values()), "not_found", "deleted")
        if self._rooms.get(doc_id) is room:
            self._keeper.discard(room)  # its pending updates have nowhere to go
            if room.unload_timer is not None:
                room.unload_timer.cancel()
            del self._rooms[doc_id]
            await self._bus.unsubscribe(doc_id)

    async def _access_changed(self, doc_id: str, user: str, membership: Role | None) -> None:
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
        await self._close_members(room, gone, "permission_denied", "access removed")

    async def _close_members(
        self, room: Room, members: list[Member], code: str, reason: str
    ) -> None:
        if not members:
            return
        message = f"document {room.doc_id!r}: {reason}"
        payload = {"doc": room.doc_id, "code": code, "message": message}
        await self._send("doc.closed", payload, [m.conn for m in members])
        for member in members:
            await self.leave(member.conn, room.doc_id)

    # -- internals: updates -----------------------------------------------------------------

    async def _apply_local(self, room: Room, update: bytes, *, exclude: str | None) -> None:
        self._check_capacity(room, len(update))
        try:
            integrated = room.apply(update)
        except ValueError:
            self.stats.invalid += 1
            raise InvalidPayload("update is not a Yjs update; the document is unchanged") from None
        if integrated is None and crdt.redundant(room.doc, update):
            # A client re-sending what is here already (its join handshake after a reconnect
            # carries its whole delete set): nothing to store or to tell anyone.
            self.stats.redundant += 1
            return
        self.stats.updates += 1
        room.size += len(update)
        self._keeper.hold(room, update)
        if integrated is not None:
            recipients = [conn for conn in room.members if conn != exclude]
            if exclude is not None and integrated != update:
                # Usually the same bytes. When not, the update may have released structs
                # that were waiting for it (pending), which its sender never had: it gets
                # them too (anything it already holds is ignored by its Yjs).
                recipients.append(exclude)
                self.stats.echoes += 1
            if recipients:
                await self._send("doc.update", self._payload(room, integrated), recipients)
        await self._publish_to(room, BusKind.UPDATE, update)

    async def _apply_remote(self, room: Room, update: bytes) -> None:
        try:
            integrated = room.apply(update)
        except ValueError:
            self.stats.invalid += 1
            log.warning("dropping an invalid update for %s from the bus", room.doc_id)
            return
        room.remote = True
        if integrated is None:
            return
        self.stats.remote_updates += 1
        room.size += len(integrated)
        if room.members:
            await self._send("doc.update", self._payload(room, integrated), room.members)

    def _check_capacity(self, room: Room, incoming: int) -> None:
        cap = self.options.max_doc_bytes
        if room.size + incoming > cap and room.exact_size() + incoming > cap:
            raise PayloadTooLarge(
                f"document {room.doc_id!r} would exceed its {cap}-byte size limit"
            )
        self._keeper.check_room(incoming)

    @staticmethod
    def _payload(room: Room, update: bytes) -> dict[str, Any]:
        return {"doc": room.doc_id, "update": update}

    # -- internals: awareness ---------------------------------------------------------------

    async def _client_awareness(
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
        await self._relay_awareness(room, update, exclude=member.conn)

    async def _relay_awareness(self, room: Room, update: bytes, *, exclude: str | None) -> None:
        recipients = [conn for conn in room.members if conn != exclude]
        if recipients:
            await self._send("doc.awareness", self._payload(room, update), recipients)
        await self._publish_to(room, BusKind.AWARENESS, update)

    async def _sweep_awareness(self) -> None:
        ttl = self.options.awareness_ttl
        now = time.monotonic()
        announce = now - self._announced >= ttl / 3
        if announce:
            self._announced = now
        for room in list(self._rooms.values()):
            gone = room.remove_clients(room.expired_clients(ttl), "timeout")
            if gone is not None and room.members:
                await self._send("doc.awareness", self._payload(room, gone), room.members)
            clients = room.local_clients()
            if announce and clients:
                await self._publish_to(room, BusKind.ALIVE, msgpack.packb(clients))

    # -- internals: peers -------------------------------------------------------------------

    async def _publish_to(self, room: Room, kind: BusKind, payload: bytes) -> None:
        await self._publish(BusMessage(kind, room.doc_id, self._node, room.epoch, payload))

    async def _publish(self, message: BusMessage) -> None:
        try:
            await self._bus.publish(message)
        except BusUnavailable as exc:
            # At most once anyway: the next state-vector exchange carries it.
            log.debug("document bus unavailable (%s)", exc)

    async def _request_state(self, room: Room) -> None:
        room.sync_replies = 0
        await self._publish_to(room, BusKind.SV_REQUEST, room.doc.get_state())

    async def _answer_state_vector(self, room: Room, sv: bytes) -> None:
        try:
            diff = room.doc.get_update(sv)
        except ValueError:
            log.warning("dropping a malformed state vector for %s", room.doc_id)
            return
        if diff != crdt.EMPTY_UPDATE:
            await self._publish_to(room, BusKind.UPDATE, diff)

    async def _anti_entropy_round(self) -> None:
        for room in list(self._rooms.values()):
            if room.changed:
                room.changed = False
                await self._request_state(room)

    # -- internals: the store (DocKeeper) ----------------------------------------------------

    async def _flush_round(self) -> None:
        try:
            await self._keeper.flush(list(self._rooms.values()))
        except Exception as exc:
            # Kept in memory and tried again next round (clients hold their updates too).
            self.stats.flush_failures += 1
            log.warning("could not store document updates (%s); retrying", exc)

    async def _reconcile_round(self) -> None:
        for room in list(self._rooms.values()):
            if room.remote:
                try:
                    await self._keeper.reconcile(room)
                except Exception as exc:
                    log.warning("could not reconcile document %s (%s)", room.doc_id, exc)

    # -- internals: tasks -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
