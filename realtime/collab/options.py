"""What a CollabEngine is told (``CollabOptions``) and what it counts (``CollabStats``).

Kept apart from the engine so its parts (the keeper, the room table) can take them without
importing the engine itself.
"""

from __future__ import annotations

from dataclasses import dataclass


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
