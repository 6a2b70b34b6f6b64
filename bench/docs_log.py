"""Compaction of a long document log, measured on the storage layer itself.

Usage: .venv/bin/python -m bench.docs_log [--updates 100000] [--clients 10] [--repeat 3]

A throwaway PostgreSQL database (TANDEM_BENCH_POSTGRES_URL) is migrated, then for each
repeat a fresh text document gets ``--updates`` log rows: single-character Yjs updates typed at
random positions by ``--clients`` authors taking turns (made by bench/node/docs_gen.js with
yjs, as editors make them), appended through ``SqlDocumentStore.append`` in batches of 1,000
(what a node's flushes do, only faster). Then, timed:
- a cold load: ``store.load`` and ``crdt.doc_from`` (what a node does to open the document
  before any compaction);
- ``SqlDocumentStore(Database(url)).compact(doc_id, realtime.collab.crdt.fold)``, with the fold
  (run in a worker thread by the store) timed on its own.
The server's engine would have compacted this log every 500 rows; this is the worst case of
a log left to grow, e.g. by a node that could not compact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.docs_servers import postgres_database
from bench.processes import NODE_DIR, ensure_node_modules
from domain.documents import DocFormat, Document, LogEntry
from realtime.collab import crdt
from storage.database import Database
from storage.documents import SqlDocumentStore
from storage.migrate import upgrade

APPEND_BATCH = 1000


def generate_updates(count: int, clients: int, seed: int, tmp: Path) -> list[bytes]:
    """``count`` single-character updates at random positions (bench/node/docs_gen.js)."""
    out = tmp / f"updates-{count}-{clients}-{seed}.bin"
    if not out.exists():
        subprocess.run(
            ["node", str(NODE_DIR / "docs_gen.js"), str(count), str(clients), str(seed), str(out)],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )
    data = out.read_bytes()
    updates, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        updates.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    if len(updates) != count:
        raise RuntimeError(f"docs_gen.js wrote {len(updates)} updates, not {count}")
    return updates


@dataclass
class Compacted:
    updates: int
    log_bytes: int
    append_s: float
    load_s: float
    compact_s: float
    fold_s: float
    compact_cpu_s: float
    snapshot_bytes: int
    text_length: int

    def as_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


async def compact_once(store: SqlDocumentStore, updates: Sequence[bytes]) -> Compacted:
    doc_id = f"bench-compact-{secrets.token_hex(4)}"
    epoch = secrets.token_hex(16)
    now = datetime.now(UTC)
    await store.create(Document(doc_id, DocFormat.TEXT, epoch, None, now), None)
    began = time.perf_counter()
    for start in range(0, len(updates), APPEND_BATCH):
        batch = updates[start : start + APPEND_BATCH]
        await store.append([LogEntry(doc_id, epoch, update) for update in batch])
    append_s = time.perf_counter() - began

    began = time.perf_counter()
    stored = await store.load(doc_id)
    assert stored is not None and len(stored.updates) == len(updates)
    await asyncio.to_thread(crdt.doc_from, stored.snapshot, stored.updates)
    load_s = time.perf_counter() - began
    del stored

    folds: list[float] = []

    def timed_fold(state: bytes | None, rows: Sequence[bytes]) -> bytes:
        t0 = time.perf_counter()
        try:
            return crdt.fold(state, rows)
        finally:
            folds.append(time.perf_counter() - t0)

    cpu0, began = time.process_time(), time.perf_counter()
    result = await store.compact(doc_id, timed_fold)
    compact_s = time.perf_counter() - began
    compact_cpu_s = time.process_time() - cpu0
    if result is None or result.rows != len(updates):
        raise RuntimeError(f"compaction folded {result and result.rows} of {len(updates)} rows")
    stored = await store.load(doc_id)
    assert stored is not None and not stored.updates and stored.snapshot is not None
    text = crdt.text_of(stored.snapshot, DocFormat.TEXT)
    await store.delete(doc_id)
    return Compacted(
        updates=len(updates),
        log_bytes=sum(len(u) for u in updates),
        append_s=append_s,
        load_s=load_s,
        compact_s=compact_s,
        fold_s=folds[0],
        compact_cpu_s=compact_cpu_s,
        snapshot_bytes=result.snapshot_bytes,
        text_length=len(text),
    )


async def measure(updates: int, clients: int, repeat: int, tmp: Path) -> list[Compacted]:
    log = await asyncio.to_thread(generate_updates, updates, clients, 1, tmp)
    runs = []
    async with postgres_database() as database:
        await asyncio.to_thread(upgrade, database.sqlalchemy_url)
        db = Database(database.sqlalchemy_url)
        try:
            store = SqlDocumentStore(db)
            for _ in range(repeat):
                runs.append(await compact_once(store, log))
        finally:
            await db.dispose()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ensure_node_modules()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-log-") as tmp:
        runs = asyncio.run(measure(args.updates, args.clients, args.repeat, Path(tmp)))
    for run in runs:
        print(json.dumps(run.as_json()))
    compact = [r.compact_s for r in runs]
    print(
        f"{args.updates} updates ({runs[0].log_bytes:,} bytes of log): compaction "
        f"median {statistics.median(compact):.2f} s (min {min(compact):.2f}, max "
        f"{max(compact):.2f}), snapshot {runs[0].snapshot_bytes:,} bytes"
    )


if __name__ == "__main__":
    main()
