"""The RoomTable: which documents this node has open, and their loading and unloading.

A document is loaded once however many join at the same moment (single flight), and
dropped ``unload_grace`` seconds after it went idle (no member, no server-side hold),
flushed and reconciled first. A join during an unload waits for it, then loads afresh; an
unload that cannot store the document keeps it open and tries again later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from domain.documents import DocumentStore
from domain.errors import NotFound
from realtime.collab.bus import DocBus
from realtime.collab.keeper import DocKeeper
from realtime.collab.options import CollabStats
from realtime.collab.peers import PeerLink
from realtime.collab.room import Room

log = logging.getLogger(__name__)


class RoomTable:
    def __init__(
        self,
        store: DocumentStore,
        bus: DocBus,
        keeper: DocKeeper,
        peers: PeerLink,
        stats: CollabStats,
        *,
        unload_grace: float,
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._store = store
        self._bus = bus
        self._keeper = keeper
        self._peers = peers
        self._stats = stats
        self._unload_grace = unload_grace
        self._spawn = spawn
        self.rooms: dict[str, Room] = {}
        self.loading: dict[str, asyncio.Future[Room]] = {}
        self.unloading: dict[str, asyncio.Future[None]] = {}

    async def acquire(self, doc_id: str) -> Room:
        """The loaded room (loading it once however many ask at the same time); the caller
        must make it non-idle (a member or a hold) or call ``release_if_idle``."""
        while True:
            unloading = self.unloading.get(doc_id)
            if unloading is not None:
                await asyncio.shield(unloading)
                continue
            room = self.rooms.get(doc_id)
            if room is not None:
                if room.unload_timer is not None:
                    room.unload_timer.cancel()
                    room.unload_timer = None
                return room
            loading = self.loading.get(doc_id)
            if loading is not None:
                await asyncio.shield(loading)
                continue
            future: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
            self.loading[doc_id] = future
            try:
                room = await self._load(doc_id)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: the waiters re-raise from their own load
                raise
            else:
                future.set_result(room)
            finally:
                del self.loading[doc_id]

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
            if doc_id not in self.rooms:
                await self._bus.unsubscribe(doc_id)
            raise
        self.rooms[doc_id] = room
        self._stats.loads += 1
        if await self._bus.peers(doc_id):
            await self._peers.request_state(room)
        else:
            room.synced.set()
        self._keeper.compact_if_due(room)
        return room

    def release_if_idle(self, room: Room) -> None:
        if not room.idle or room.unload_timer is not None:
            return
        if self.rooms.get(room.doc_id) is not room:
            return
        loop = asyncio.get_running_loop()
        room.unload_timer = loop.call_later(
            self._unload_grace, lambda: self._spawn(self._unload(room))
        )

    async def _unload(self, room: Room) -> None:
        room.unload_timer = None
        if not room.idle or self.rooms.get(room.doc_id) is not room:
            return
        doc_id = room.doc_id
        done = asyncio.get_running_loop().create_future()
        self.unloading[doc_id] = done
        del self.rooms[doc_id]
        try:
            await self._keeper.flush([room])
            if room.remote:
                await self._keeper.reconcile(room)
            await self._bus.unsubscribe(doc_id)
            self._stats.unloads += 1
        except Exception:
            # Its unflushed updates may exist nowhere else: keep it and try again later.
            log.exception("could not unload document %s; keeping it open", doc_id)
            self.rooms[doc_id] = room
            self.release_if_idle(room)
            self._spawn(self._peers.request_state(room))  # it missed the bus meanwhile
        finally:
            del self.unloading[doc_id]
            done.set_result(None)
