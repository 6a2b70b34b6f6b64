"""One open document on this node: its Y.Doc, its awareness, its local members.

Everything here runs on the event loop thread and never awaits: a Room is changed in
synchronous steps, so an update can never slip between a joiner's diff and its membership.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Awareness, Doc, merge_updates

from domain.documents import DocFormat, Role, StoredState
from realtime.collab.crdt import awareness_clients, encode_awareness


@dataclass(eq=False, slots=True)
class Member:
    conn: str
    user: str
    role: Role
    granted: Role | None = None  # what the connection's token gives by itself
    # Awareness client ids this connection introduced (its tabs' Y.Docs): removed when it goes.
    clients: set[int] = field(default_factory=set)


class Room:
    def __init__(self, doc_id: str, fmt: DocFormat, state: StoredState) -> None:
        self.doc_id = doc_id
        self.format = fmt
        self.epoch = state.epoch
        self.doc: Doc[Any] = Doc()
        self._integrated: list[bytes] = []
        if state.snapshot:
            self.doc.apply_update(state.snapshot)
        for update in state.updates:
            self.doc.apply_update(update)
        # What a transaction integrated (an update whose dependencies are missing waits inside
        # Yrs and shows here once they arrive; a duplicate shows nothing). The callback holds
        # the list, not the room: Yrs keeps it alive, and the garbage collector cannot see a
        # cycle through Rust, so a room it referred to would never be freed.
        integrated = self._integrated
        self.doc.observe(lambda event: integrated.append(event.update))
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)  # the server is nobody's cursor
        self.members: dict[str, Member] = {}
        self.holds = 0  # server-side users (HTTP reads and edits) keeping it loaded
        self.pending: list[bytes] = []  # raw updates from this node's clients, not yet stored
        self.size = state.size  # bytes of state, an upper bound between exact measurements
        self.snapshot_bytes = len(state.snapshot or b"")
        self.log_rows = len(state.updates)
        self.log_bytes = sum(len(u) for u in state.updates)
        self.changed = False  # something integrated since the last anti-entropy round
        self.remote = False  # updates from other nodes since the last reconcile
        # Remote awareness client ids -> when they were last renewed (time.monotonic()).
        self.seen: dict[int, float] = {}
        self.unload_timer: asyncio.TimerHandle | None = None
        self.sync_replies = 0
        self.synced = asyncio.Event()

    @property
    def idle(self) -> bool:
        return not self.members and not self.holds

    def apply(self, update: bytes) -> bytes | None:
        """Apply ``update``; return what integrated (None when nothing did).

        Raises:
            ValueError: not a Yjs update; the document is unchanged.
        """
        self._integrated.clear()
        self.doc.apply_update(update)
        if not self._integrated:
            return None
        self.changed = True
        if len(self._integrated) == 1:
            return self._integrated[0]
        return merge_updates(*self._integrated)  # several transactions: rare, and small

    def exact_size(self) -> int:
        self.size = len(self.doc.get_update())
        return self.size

    def owner_of(self, client: int) -> Member | None:
        for member in self.members.values():
            if client in member.clients:
                return member
        return None

    def local_clients(self) -> list[int]:
        return [client for member in self.members.values() for client in member.clients]

    def awareness_state(self) -> bytes:
        """Every current awareness state, as one update (what a joiner gets)."""
        return self.awareness.encode_awareness_update(list(self.awareness.states))

    def remove_clients(self, clients: list[int], origin: str) -> bytes | None:
        """Drop awareness states; the update telling others so, or None if none were held."""
        held = [client for client in clients if client in self.awareness.states]
        if not held:
            return None
        self.awareness.remove_awareness_states(held, origin)
        for client in held:
            self.seen.pop(client, None)
        return self.awareness.encode_awareness_update(held)

    def apply_remote_awareness(self, update: bytes, node: str) -> bytes | None:
        """Apply an awareness update from another node, except removals of states one of this
        node's connections holds (a client that moved here while its old node said goodbye).
        Returns what to pass on to local members."""
        entries = awareness_clients(update, max_clients=1024)
        kept = [
            entry
            for entry in entries
            if not (entry.removed and self.owner_of(entry.client) is not None)
        ]
        if not kept:
            return None
        if len(kept) != len(entries):
            update = encode_awareness(kept)
        now = time.monotonic()
        for entry in kept:
            if entry.removed:
                self.seen.pop(entry.client, None)
            else:
                self.seen[entry.client] = now
        self.awareness.apply_awareness_update(update, node)
        return update

    def renew(self, clients: list[int]) -> None:
        now = time.monotonic()
        for client in clients:
            if client in self.awareness.states and self.owner_of(client) is None:
                self.seen[client] = now

    def expired_clients(self, ttl: float) -> list[int]:
        """Remote states not renewed within ``ttl`` (their node or tab is gone)."""
        horizon = time.monotonic() - ttl
        return [
            client
            for client in self.awareness.states
            if self.owner_of(client) is None and self.seen.get(client, 0.0) < horizon
        ]
