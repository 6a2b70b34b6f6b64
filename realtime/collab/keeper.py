"""The DocKeeper: what keeps a node's open documents in the store.

- The raw updates this node's clients send wait in their room (``hold``) and are appended in
  one transaction per round for every document (``flush``), never a commit per keystroke.
  Past ``max_pending_bytes`` waiting (the store down for long), updates are refused
  (retryably) rather than held without bound.
- A log is compacted into a new snapshot once it is as large as the snapshot (at least
  ``compact_min_bytes``) or ``compact_after_rows`` long, one compaction per document at a time.
- ``reconcile`` appends what the store lacks of this node's copy: updates another node
  received from its clients but never stored (it died before its flush).

A document found gone from the store (deleted, or started over under a new epoch, while this
node held it and the news never came) is reported through ``on_gone``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from domain.documents import DocumentStore, LogEntry
from domain.errors import Unavailable
from realtime.collab import crdt
from realtime.collab.options import CollabOptions, CollabStats
from realtime.collab.room import Room

log = logging.getLogger(__name__)


class DocKeeper:
    def __init__(
        self,
        store: DocumentStore,
        options: CollabOptions,
        stats: CollabStats,
        *,
        on_gone: Callable[[str], Awaitable[None]],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._store = store
        self._options = options
        self._stats = stats
        self._on_gone = on_gone
        self._spawn = spawn
        self._compacting: set[str] = set()
        self.pending_bytes = 0

    def check_room(self, incoming: int) -> None:
        """Raises Unavailable when the updates waiting for the store are at their bound."""
        if self.pending_bytes + incoming > self._options.max_pending_bytes:
            raise Unavailable("the document store is not keeping up; retry")

    def hold(self, room: Room, update: bytes) -> None:
        room.pending.append(update)
        self.pending_bytes += len(update)

    def discard(self, room: Room) -> None:
        """Forget what ``room`` holds for the store (its document is gone)."""
        self.pending_bytes -= sum(len(u) for u in room.pending)
        room.pending.clear()

    async def flush(self, rooms: list[Room]) -> None:
        rooms = [room for room in rooms if room.pending]
        if not rooms:
            return
        taken = [(room, room.pending) for room in rooms]
        for room in rooms:
            room.pending = []
        entries = [
            LogEntry(room.doc_id, room.epoch, update)
            for room, pending in taken
            for update in pending
        ]
        try:
            gone = await self._store.append(entries)
        except BaseException:
            for room, pending in taken:
                room.pending[:0] = pending  # back in front, in order
            raise
        for doc_id in gone:
            log.warning("document %s is gone from the store; closing it here", doc_id)
            await self._on_gone(doc_id)
        for room, pending in taken:
            self.pending_bytes -= sum(len(u) for u in pending)
            room.log_rows += len(pending)
            room.log_bytes += sum(len(u) for u in pending)
            self.compact_if_due(room)
        self._stats.flushed += len(entries)

    def compact_if_due(self, room: Room) -> None:
        o = self._options
        due = room.log_rows >= o.compact_after_rows or room.log_bytes >= max(
            o.compact_min_bytes, room.snapshot_bytes
        )
        if due and room.doc_id not in self._compacting:
            self._compacting.add(room.doc_id)
            self._spawn(self._compact(room))

    async def _compact(self, room: Room) -> None:
        try:
            result = await self._store.compact(room.doc_id, crdt.fold)
            if result is not None:
                self._stats.compactions += 1
                room.snapshot_bytes = result.snapshot_bytes
                room.log_rows = max(0, room.log_rows - result.rows)
                room.log_bytes = max(0, room.log_bytes - result.bytes)
            else:
                # Another node compacted it (or a late row made this one wait): count afresh
                # rather than asking again after every flush.
                room.log_rows = room.log_bytes = 0
        except Exception:
            log.exception("compaction of document %s failed", room.doc_id)
        finally:
            self._compacting.discard(room.doc_id)

    async def flush_round(self, rooms: list[Room]) -> None:
        """One periodic flush; a failure is logged and counted, never raised."""
        try:
            await self.flush(rooms)
        except Exception as exc:
            # Kept in memory and tried again next round (clients hold their updates too).
            self._stats.flush_failures += 1
            log.warning("could not store document updates (%s); retrying", exc)

    async def reconcile_round(self, rooms: list[Room]) -> None:
        """Reconcile each of ``rooms`` that heard from peers; a failure is logged, never raised."""
        for room in rooms:
            if room.remote:
                try:
                    await self.reconcile(room)
                except Exception as exc:
                    log.warning("could not reconcile document %s (%s)", room.doc_id, exc)

    async def reconcile(self, room: Room) -> None:
        """Append what the store lacks of this node's copy of ``room``."""
        await self.flush([room])
        stored = await self._store.load(room.doc_id)
        if stored is None or stored.epoch != room.epoch:
            await self._on_gone(room.doc_id)  # gone while this node held it open
            return
        stored_doc = await asyncio.to_thread(
            crdt.doc_from, stored.snapshot, stored.updates, threads=True
        )
        diff = room.doc.get_update(stored_doc.get_state())
        # "Changes anything", not "non-empty": a diff always carries the whole delete set.
        if await asyncio.to_thread(crdt.changes, stored_doc, diff):
            if await self._store.append([LogEntry(room.doc_id, room.epoch, diff)]):
                await self._on_gone(room.doc_id)
                return
            room.log_rows += 1
            room.log_bytes += len(diff)
            self._stats.repairs += 1
        room.remote = False
