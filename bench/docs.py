"""Collaborative documents: Tandem against Hocuspocus, on the same typing workload.

Scenarios (``python -m bench --scenarios docs-edit,docs-memory,docs-log`` or ``docs``):

- docs-edit: ``editors`` editors (default 50) on ONE document, each typing ``rate`` (10)
  single characters a second at random positions of the Y.Text 'content' and moving its
  awareness cursor every ``awareness_every`` (5) keystrokes, split across two server nodes that
  share Redis (alternating: editor i on node i % 2). Reports update-to-other-editors latency
  (p50/p99/max), updates/s typed, deliveries/s, server CPU per typed update (both nodes'
  utime+stime over the step, typing and draining, / updates), Redis CPU per update (private
  redis-server only), PostgreSQL backend CPU per update, and whether every editor ended with
  the same text.
- docs-memory: ``memory_docs`` (1,000) documents open on one node with 2 editors each. Server
  RSS with the connections open but idle (no document joined), then after every editor
  joined its document and typed ``memory_chars`` characters: (docs - idle) / documents is
  the memory per open document, the connections' own cost subtracted (they are the same
  connections); (idle - before) / connections the cost of an idle connection.
- docs-log: ``log_chars`` (10,000) characters typed by ``log_editors`` (10) editors on one
  node: bytes written to the database per 10,000 characters (Tandem: each update appended to
  doc_updates; Hocuspocus: the whole state, rewritten after every debounce), counted by a
  trigger on the throwaway database (the engine compacts every 500 rows, so the table alone
  would not show them); then, for Tandem, compaction of a ``compact_updates`` (100,000) row log
  on the storage layer (bench/docs_log.py).

Each (scenario, server) runs ``repeat`` times on fresh processes and a fresh database,
servers interleaved; the tables show the median and, with repeats, the range.
Editors run in Node worker processes (bench/node/docs_loadgen.js) on the same machine, with
yjs 13.6; Tandem editors speak the wire contract with socket.io-client, Hocuspocus editors are
@hocuspocus/provider instances.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.docs_log import measure as measure_compaction
from bench.docs_servers import (
    Database,
    DocsTarget,
    backend_cpu_delta,
    create_tandem_document,
    docs_cluster,
)
from bench.histogram import Histogram, rounded
from bench.loadgen import Worker, split
from bench.processes import NODE_DIR
from bench.procstat import cpu_seconds, rss_bytes

DOCS_LOADGEN = NODE_DIR / "docs_loadgen.js"
SERVER_NAMES = {
    "tandem": "Tandem",
    "tandem2": "Tandem, 2 nodes + Redis",
    "hocuspocus": "Hocuspocus",
    "hocuspocus2": "Hocuspocus, 2 nodes + Redis",
}


@dataclass(frozen=True)
class DocsScenario:
    name: str
    nodes: int
    families: tuple[str, ...]

    def server(self, family: str) -> str:
        return family + ("2" if self.nodes > 1 else "")


DOCS_SCENARIOS = {
    "docs-edit": DocsScenario("docs-edit", 2, ("tandem", "hocuspocus")),
    "docs-memory": DocsScenario("docs-memory", 1, ("tandem", "hocuspocus")),
    "docs-log": DocsScenario("docs-log", 1, ("tandem", "hocuspocus")),
}


@dataclass
class DocsOptions:
    editors: int = 50
    rate: float = 10.0  # keystrokes (updates) a second per editor
    seconds: float = 20.0  # of typing in the measured step
    warmup_s: float = 3.0
    awareness_every: int = 5  # a cursor move every this many keystrokes (0: none)
    workers: int = 2  # Node editor processes
    # docs-edit: one more editor per node that only watches, in a process of its own (the
    # latency it sees leaves out the typing processes' backlog).
    probes: bool = True
    repeat: int = 1
    redis: str = "private"  # or "shared": TANDEM_BENCH_REDIS_URL, Redis CPU not attributed
    hocuspocus_persist: bool = True  # Hocuspocus stores documents in PostgreSQL
    memory_docs: int = 1000
    memory_editors_per_doc: int = 2
    memory_chars: int = 3  # per editor
    # Read the memory once the servers have stored what was typed (Hocuspocus: its 2 s
    # debounce); quick runs only settle.
    memory_after_store: bool = True
    log_chars: int = 10_000
    log_editors: int = 10
    log_rate: float = 50.0  # per editor
    compact_updates: int = 100_000
    compact_clients: int = 10
    connect_concurrency: int = 50  # per worker
    drain_s: float = 30.0
    stall_s: float = 5.0
    settle_s: float = 3.0

    @classmethod
    def quick(cls) -> DocsOptions:
        return cls(
            editors=10,
            seconds=3.0,
            warmup_s=0.5,
            memory_docs=50,
            log_chars=1000,
            log_editors=5,
            log_rate=100.0,
            compact_updates=5000,
            memory_after_store=False,
            drain_s=10.0,
            stall_s=3.0,
            settle_s=0.5,
        )


@dataclass
class DocsResult:
    server: str
    scenario: str
    description: str
    nodes: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    compaction: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def failed(self) -> bool:
        bad_run = any(
            run.get("loss")
            or run.get("probe_loss")
            or run.get("converged") is False
            or run.get("dropped")
            for run in self.runs
        )
        return bool(self.errors) or bad_run or not self.runs


def _log(message: str) -> None:
    print(message, flush=True)


# -- editors -----------------------------------------------------------------------------------


class Editors:
    """Editors in Node worker processes (bench/node/docs_loadgen.js), for one target."""

    def __init__(self, target: DocsTarget, options: DocsOptions, tmp: Path, bound_s: float):
        self.target = target
        self.options = options
        self.tmp = tmp
        self.bound_s = bound_s
        self.workers: list[Worker] = []
        self.count = 0
        self.per_doc = 1
        self.probe: Worker | None = None

    async def connect(self, count: int, workers: int) -> float:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.count = count
        for i in range(max(1, min(workers, count))):
            log_path = self.tmp / f"editors-{i}.log"
            self.workers.append(await Worker.start(log_path, self.bound_s, DOCS_LOADGEN))
        began = time.monotonic()
        slices = split(count, len(self.workers))
        replies = await asyncio.gather(
            *(
                worker.call(
                    {
                        "cmd": "connect",
                        "mode": self.target.family,
                        "urls": self.target.urls,
                        "token": self.target.token,
                        "start": start,
                        "count": n,
                        "concurrency": self.options.connect_concurrency,
                    },
                    120 + n / 10,
                )
                for worker, (start, n) in zip(self.workers, slices, strict=True)
            )
        )
        _raise_errors("connect", replies, count)
        return time.monotonic() - began

    async def join(self, prefix: str, per_doc: int) -> float:
        self.per_doc = per_doc
        began = time.monotonic()
        command = {
            "cmd": "join",
            "prefix": prefix,
            "perDoc": per_doc,
            "token": self.target.token,
            "concurrency": self.options.connect_concurrency,
        }
        timeout = 120 + self.count / 10
        replies = await asyncio.gather(*(w.call(command, timeout) for w in self.workers))
        _raise_errors("join", replies, self.count)
        return time.monotonic() - began

    async def add_probes(self, doc: str) -> None:
        """One watching editor per node, in a worker process of its own that never types: its
        receipts show the delivery latency without the typing workers' own backlog (they run
        near a core each at full load)."""
        target = self.target
        log_path = self.tmp / "probes.log"
        self.probe = await Worker.start(log_path, self.bound_s, DOCS_LOADGEN)
        count = len(target.urls)
        # Numbered from a multiple of the node count: probe i watches node i.
        start = 1000 * count
        connect = {
            "cmd": "connect",
            "mode": target.family,
            "urls": target.urls,
            "token": target.token,
            "start": start,
            "count": count,
        }
        _raise_errors("probe connect", [await self.probe.call(connect, 60)], count)
        join = {"cmd": "join", "doc": doc, "token": target.token}
        _raise_errors("probe join", [await self.probe.call(join, 60)], count)

    async def type(
        self, rate: float, seconds: float, *, count: int | None = None, awareness_every: int = 0
    ) -> dict[str, Any]:
        """Every editor types ``rate`` keystrokes/s for ``seconds`` (or ``count`` keystrokes);
        waits for every delivery (or the drain's end); returns the step's figures."""
        command: dict[str, Any] = {
            "cmd": "type",
            "rate": rate,
            "duration": seconds,
            "awarenessEvery": awareness_every,
        }
        if count is not None:
            command["count"] = count
        database = self.target.database
        postgres0 = await database.backend_cpu() if database is not None else {}
        if self.probe is not None:
            await self.probe.call({"cmd": "record"})
        cpu0 = self._cpu()
        began = time.monotonic()
        typed = await asyncio.gather(*(w.call(command, seconds + 120) for w in self.workers))
        typing_s = max(t["seconds"] for t in typed)
        sent = sum(t["sent"] for t in typed)
        expected = sent * (self.per_doc - 1)
        received = await self._drain(self.workers, expected)
        wall = time.monotonic() - began
        cpu1 = self._cpu()
        postgres1 = await database.backend_cpu() if database is not None else {}
        sends: dict[str, Any] = {}
        for reply in await asyncio.gather(*(w.call({"cmd": "sends"}) for w in self.workers)):
            sends.update(reply["sends"])
        probed = None
        if self.probe is not None:
            await self._drain([self.probe], sent * len(self.target.urls))
            probed = await self.probe.call({"cmd": "latency", "sends": sends}, 120)
        stats = await asyncio.gather(
            *(w.call({"cmd": "latency", "sends": sends}, 120) for w in self.workers)
        )
        histogram = Histogram()
        first = min(t["first"] for t in typed)
        last = 0.0
        matched = 0
        for s in stats:
            histogram.add(s["hist"], s["max_us"])
            matched += s["matched"]
            if s["last"] is not None:
                last = max(last, s["last"])
        server_cpu = cpu1["server"] - cpu0["server"]
        figures: dict[str, Any] = {
            "editors": self.count,
            "sent": sent,
            "typing_s": round(typing_s, 2),
            "updates_per_s": round(sent / typing_s, 1) if typing_s else None,
            "expected": expected,
            "delivered": matched,
            "received": received,
            "loss": max(0, expected - matched),
            "deliveries_per_s": (
                round(matched / max((last - first) / 1000, typing_s), 1) if matched else None
            ),
            "p50_ms": rounded(histogram.quantile_ms(0.5)),
            "p99_ms": rounded(histogram.quantile_ms(0.99)),
            "max_ms": rounded(histogram.max_ms),
            "wall_s": round(wall, 2),
            "server_cpu_s": round(server_cpu, 3),
            "cpu_us_per_update": round(server_cpu * 1e6 / sent, 1) if sent else None,
            "server_cores": round(server_cpu / wall, 2),
            "loadgen_cores": round((cpu1["loadgen"] - cpu0["loadgen"]) / wall, 2),
        }
        if probed is not None:
            probe = Histogram()
            probe.add(probed["hist"], probed["max_us"])
            figures["probe_p50_ms"] = rounded(probe.quantile_ms(0.5))
            figures["probe_p99_ms"] = rounded(probe.quantile_ms(0.99))
            figures["probe_max_ms"] = rounded(probe.max_ms)
            figures["probe_loss"] = max(0, sent * len(self.target.urls) - probed["matched"])
        if cpu0["redis"] is not None and cpu1["redis"] is not None and sent:
            redis_cpu = cpu1["redis"] - cpu0["redis"]
            figures["redis_cpu_us_per_update"] = round(redis_cpu * 1e6 / sent, 1)
            figures["redis_cores"] = round(redis_cpu / wall, 3)
        else:
            figures["redis_cpu_us_per_update"] = None
        if database is not None and sent:
            pg_cpu = backend_cpu_delta(postgres0, postgres1)
            figures["postgres_cpu_us_per_update"] = round(pg_cpu * 1e6 / sent, 1)
        else:
            figures["postgres_cpu_us_per_update"] = None
        return figures

    @property
    def _all(self) -> list[Worker]:
        return [*self.workers, *([self.probe] if self.probe is not None else [])]

    async def counters(self) -> dict[str, Any]:
        replies = await asyncio.gather(*(w.call({"cmd": "count"}) for w in self._all))
        errors: dict[str, int] = {}
        for reply in replies:
            for code, n in reply["errors"].items():
                errors[code] = errors.get(code, 0) + n
        return {"dropped": sum(r["dropped"] for r in replies), "errors": errors}

    async def converged(self) -> bool:
        """Whether every editor of each document holds the same text."""
        views: dict[str, set[str]] = {}
        for reply in await asyncio.gather(*(w.call({"cmd": "digest"}) for w in self._all)):
            for doc, digests in reply["docs"].items():
                views.setdefault(doc, set()).update(digests)
        return bool(views) and all(len(digests) == 1 for digests in views.values())

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self._all))

    async def _drain(self, workers: list[Worker], expected: int) -> int:
        o = self.options
        deadline = time.monotonic() + o.drain_s
        received, progress_at = -1, time.monotonic()
        while True:
            counts = await asyncio.gather(*(w.call({"cmd": "count"}) for w in workers))
            total = sum(c["received"] for c in counts)
            now = time.monotonic()
            if total >= expected:
                return total
            if total != received:
                received, progress_at = total, now
            elif now - progress_at > o.stall_s or now > deadline:
                return total
            await asyncio.sleep(0.05)

    def _cpu(self) -> dict[str, Any]:
        target = self.target
        return {
            "server": sum(cpu_seconds(pid) for pid in target.pids),
            "redis": target.redis.cpu_seconds() if target.redis is not None else None,
            "loadgen": sum(worker.cpu_seconds() for worker in self._all),
        }


def _raise_errors(what: str, replies: Iterable[dict[str, Any]], expected: int) -> None:
    ok = 0
    problems: dict[str, int] = {}
    for reply in replies:
        ok += reply["ok"]
        for message, n in reply["errors"].items():
            problems[message] = problems.get(message, 0) + n
    if ok < expected:
        detail = "; ".join(f"{n} x {m}" for m, n in problems.items())
        raise RuntimeError(f"{what}: {ok} of {expected} editors ({detail})")


def _stored_within(target: DocsTarget) -> float:
    """Seconds after the last keystroke by which the server has written it: Tandem flushes
    every 0.25 s; Hocuspocus stores 2 s after the last change (its debounce)."""
    return 1.0 if target.family == "tandem" else 3.0


def _rss(target: DocsTarget) -> int:
    return sum(rss_bytes(pid) for pid in target.pids)


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


# -- the scenarios -----------------------------------------------------------------------------


def _bound(options: DocsOptions, clients: int) -> float:
    """An upper bound on one run: every worker exits by itself after it."""
    return 300 + clients / 5 + 3 * (options.seconds + options.drain_s) + options.log_chars / 20


async def _edit(target: DocsTarget, options: DocsOptions, tmp: Path) -> dict[str, Any]:
    doc = f"bench-edit-{secrets.token_hex(3)}"
    if target.family == "tandem":
        await create_tandem_document(target, doc)
    editors = Editors(target, options, tmp, _bound(options, options.editors))
    try:
        connect_s = await editors.connect(options.editors, options.workers)
        # One document: every editor's number maps to document 0.
        join_s = await editors.join(doc + "-", options.editors)
        if options.probes:
            await editors.add_probes(doc + "-0")
        every = options.awareness_every
        await editors.type(rate=options.rate, seconds=options.warmup_s, awareness_every=every)
        figures = await editors.type(
            rate=options.rate, seconds=options.seconds, awareness_every=every
        )
        figures["converged"] = await editors.converged()
        figures.update(await editors.counters())
        figures["connect_s"] = round(connect_s, 2)
        figures["join_s"] = round(join_s, 2)
        figures["rss_mib"] = _mib(_rss(target))
        if target.redis is not None:
            figures["redis_buffer_disconnects"] = target.redis.buffer_disconnects()
        if not target.alive():
            raise RuntimeError(f"a server process died:\n{target.log_tail()}")
        return figures
    finally:
        await editors.close()


async def _memory(target: DocsTarget, options: DocsOptions, tmp: Path) -> dict[str, Any]:
    per_doc = options.memory_editors_per_doc
    count = options.memory_docs * per_doc
    editors = Editors(target, options, tmp, _bound(options, count))
    try:
        await asyncio.sleep(options.settle_s)
        before = _rss(target)
        connect_s = await editors.connect(count, options.workers)
        await asyncio.sleep(options.settle_s)
        idle = _rss(target)
        join_s = await editors.join(f"bench-mem-{secrets.token_hex(3)}-", per_doc)
        rate = 10.0
        typed = await editors.type(
            rate=rate,
            seconds=options.memory_chars / rate + 10,
            count=options.memory_chars,
            awareness_every=1 if options.awareness_every else 0,
        )
        stored = _stored_within(target) if options.memory_after_store else 0.0
        await asyncio.sleep(max(options.settle_s, stored))
        docs = _rss(target)
        if not target.alive():
            raise RuntimeError(f"a server process died:\n{target.log_tail()}")
        figures = {
            "documents": options.memory_docs,
            "connections": count,
            "connect_s": round(connect_s, 2),
            "join_s": round(join_s, 2),
            "rss_before_mib": _mib(before),
            "rss_idle_mib": _mib(idle),
            "rss_docs_mib": _mib(docs),
            "kib_per_idle_connection": round((idle - before) / 1024 / count, 1),
            "kib_per_document": round((docs - idle) / 1024 / options.memory_docs, 1),
            "sent": typed["sent"],
            "loss": typed["loss"],
            "converged": await editors.converged(),
            "server_cpu_s": typed["server_cpu_s"],
        }
        figures.update(await editors.counters())
        return figures
    finally:
        await editors.close()


WRITTEN_COLUMNS = {
    "tandem": {"doc_updates": "update", "doc_snapshots": "state"},
    "hocuspocus": {"hocuspocus_documents": "state"},
}


def _write_counter(table: str, column: str) -> str:
    """A trigger counting every row written to ``table`` (inserts and updates): rows, the
    bytes of ``column`` and the whole row's size (pg_column_size of the tuple, as stored:
    a large value compressed)."""
    return f"""
    CREATE TABLE IF NOT EXISTS bench_writes (
        name text PRIMARY KEY,
        rows bigint NOT NULL, payload bigint NOT NULL, tuple_bytes bigint NOT NULL);
    INSERT INTO bench_writes VALUES ('{table}', 0, 0, 0);
    CREATE OR REPLACE FUNCTION bench_count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE bench_writes SET rows = rows + 1,
            payload = payload + coalesce(length(NEW."{column}"), 0),
            tuple_bytes = tuple_bytes + pg_column_size(NEW.*)
        WHERE name = '{table}';
        RETURN NULL;
    END $$;
    CREATE TRIGGER bench_count_{table} AFTER INSERT OR UPDATE ON {table}
        FOR EACH ROW EXECUTE FUNCTION bench_count_{table}();
    """


async def _execute(database: Database, statement: str, *, script: bool = False) -> list[Any]:
    """Rows of a query; or, with ``script``, run several statements (no rows)."""
    connection = await database.connect()
    try:
        if script:
            await connection.execute(statement)
            return []
        return list(await connection.fetch(statement))
    finally:
        await connection.close()


async def _log_growth(target: DocsTarget, options: DocsOptions, tmp: Path) -> dict[str, Any]:
    database = target.database
    if database is None:
        raise RuntimeError("docs-log needs the database (Hocuspocus without persistence)")
    for table, column in WRITTEN_COLUMNS[target.family].items():
        await _execute(database, _write_counter(table, column), script=True)
    doc = f"bench-log-{secrets.token_hex(3)}"
    if target.family == "tandem":
        await create_tandem_document(target, doc)
    editors = Editors(target, options, tmp, _bound(options, options.log_editors))
    try:
        await editors.connect(options.log_editors, 1)
        await editors.join(doc + "-", options.log_editors)
        per_editor = math.ceil(options.log_chars / options.log_editors)
        typed = await editors.type(
            rate=options.log_rate,
            seconds=per_editor / options.log_rate + 10,
            count=per_editor,
        )
        await asyncio.sleep(_stored_within(target))
        written = {
            row["name"]: row
            for row in await _execute(database, "SELECT * FROM bench_writes ORDER BY name")
        }
        chars = typed["sent"]
        per_10k = 10_000 / chars if chars else 0.0
        log = written.get("doc_updates")
        rows = sum(row["rows"] for row in written.values())
        payload = sum(row["payload"] for row in written.values())
        tuples = sum(row["tuple_bytes"] for row in written.values())
        figures: dict[str, Any] = {
            "chars": chars,
            "loss": typed["loss"],
            "converged": await editors.converged(),
            "rows_written": rows,
            "bytes_written": payload,
            "tuple_bytes": tuples,
            "bytes_written_per_10k_chars": round(payload * per_10k),
            "tuple_bytes_per_10k_chars": round(tuples * per_10k),
            # Tandem: the update log alone (the rest is the snapshots of its compactions).
            "log_rows": log["rows"] if log else None,
            "log_bytes_per_10k_chars": round(log["payload"] * per_10k) if log else None,
            "log_bytes_per_char": round(log["payload"] / chars, 1) if log and chars else None,
            "snapshot_writes": rows - (log["rows"] if log else 0),
            "typing_s": typed["typing_s"],
            "server_cpu_us_per_update": typed["cpu_us_per_update"],
            "postgres_cpu_us_per_update": typed["postgres_cpu_us_per_update"],
        }
        figures["state_bytes"] = await _state_bytes(target, database, doc + "-0")
        figures.update(await editors.counters())
        return figures
    finally:
        await editors.close()


async def _state_bytes(target: DocsTarget, database: Database, doc: str) -> int | None:
    if target.family == "tandem":
        from bench.targets import API_KEY

        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{target.urls[0]}/api/docs/{doc}", headers={"Authorization": f"Bearer {API_KEY}"}
            )
            response.raise_for_status()
            size: int = response.json()["size"]
            return size
    rows = await _execute(
        database, f"SELECT length(state) AS n FROM hocuspocus_documents WHERE name = '{doc}'"
    )
    return rows[0]["n"] if rows else None


_RUNS: dict[str, Callable[[DocsTarget, DocsOptions, Path], Any]] = {
    "docs-edit": _edit,
    "docs-memory": _memory,
    "docs-log": _log_growth,
}


async def run_docs(
    scenarios: list[DocsScenario], families: list[str], options: DocsOptions, tmp: Path
) -> list[DocsResult]:
    results: list[DocsResult] = []
    for scenario in scenarios:
        chosen = [f for f in scenario.families if f in families]
        by_family = {
            family: DocsResult(
                scenario.server(family), scenario.name, describe(scenario, options), scenario.nodes
            )
            for family in chosen
        }
        _log(f"{scenario.name}: {describe(scenario, options)}")
        for repeat in range(options.repeat):
            for family in chosen:  # interleaved: A, B, A, B...
                result = by_family[family]
                where = tmp / f"{scenario.name}-{family}-{repeat}"
                try:
                    async with docs_cluster(
                        family,
                        scenario.nodes,
                        where / "server",
                        redis=options.redis,
                        persist=options.hocuspocus_persist,
                    ) as target:
                        run = await asyncio.wait_for(
                            _RUNS[scenario.name](target, options, where),
                            _bound(options, options.memory_docs * 2) + 60,
                        )
                except Exception as exc:  # reported; the other runs go on
                    result.errors.append(f"run {repeat + 1}: {type(exc).__name__}: {exc}")
                    _log(f"  {result.server} {scenario.name}: failed: {exc}")
                    continue
                run["load_average_1m"] = round(os.getloadavg()[0], 2)
                result.runs.append(run)
                _log(f"  {result.server:12} {scenario.name:11} run {repeat + 1}: {_line(run)}")
        if scenario.name == "docs-log" and "tandem" in by_family:
            result = by_family["tandem"]
            try:
                runs = await measure_compaction(
                    options.compact_updates, options.compact_clients, options.repeat, tmp
                )
                result.compaction = [r.as_json() for r in runs]
                for r in result.compaction:
                    _log(f"  tandem       compaction  {_line(r)}")
            except Exception as exc:
                result.errors.append(f"compaction: {type(exc).__name__}: {exc}")
                _log(f"  tandem compaction: failed: {exc}")
        for result in by_family.values():
            result.summary = summarize(result.runs)
            if result.compaction:
                result.summary["compaction"] = summarize(result.compaction)
            results.append(result)
    return results


def describe(scenario: DocsScenario, options: DocsOptions) -> str:
    o = options
    match scenario.name:
        case "docs-edit":
            cursor = f", a cursor move every {o.awareness_every}" if o.awareness_every else ""
            return (
                f"{o.editors} editors on one document, {o.rate:g} keystrokes/s each{cursor}, "
                f"split across {scenario.nodes} nodes, {o.seconds:g} s"
            )
        case "docs-memory":
            return (
                f"{o.memory_docs} documents open on one node, {o.memory_editors_per_doc} editors "
                f"each typing {o.memory_chars} characters"
            )
        case _:
            return (
                f"{o.log_chars} characters typed by {o.log_editors} editors on one node; "
                f"compaction of a {o.compact_updates}-update log"
            )


def _line(figures: dict[str, Any]) -> str:
    keys = [k for k, v in figures.items() if isinstance(v, int | float | bool) and v is not None]
    return ", ".join(f"{k} {figures[k]}" for k in keys[:18])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """For every numeric figure: median, min and max over the runs."""
    summary: dict[str, Any] = {}
    if not runs:
        return summary
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            summary[key] = {
                "median": round(statistics.median(numbers), 3),
                "min": min(numbers),
                "max": max(numbers),
            }
    return summary


# -- the report --------------------------------------------------------------------------------


def _cell(
    result: DocsResult,
    key: str,
    digits: int = 1,
    source: str | None = None,
    *,
    median_only: bool = False,
) -> str:
    summary = result.summary.get(source) if source else result.summary
    figure = (summary or {}).get(key)
    if figure is None:
        return "-"
    median, low, high = figure["median"], figure["min"], figure["max"]
    text = f"{median:,.{digits}f}"
    count = len(result.compaction if source else result.runs)
    if count > 1 and not median_only:
        text += f" ({low:,.{digits}f}–{high:,.{digits}f})"
    return text


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _name(result: DocsResult) -> str:
    name = SERVER_NAMES.get(result.server, result.server)
    return name + (" (failed)" if result.failed else "")


def tables(results: list[DocsResult]) -> str:
    """Markdown tables: one per documents scenario. Figures are medians over the runs,
    with (min–max) when there were several."""
    out = []
    edit = [r for r in results if r.scenario == "docs-edit"]
    if edit:
        headers = [
            "docs-edit",
            "editors",
            "updates/s typed",
            "deliveries/s",
            "latency p50 ms",
            "p99 ms",
            "max ms",
            "probe p50 ms",
            "probe p99 ms",
            "loss",
            "server CPU µs/update",
            "server cores",
            "Redis CPU µs/update",
            "PostgreSQL CPU µs/update",
            "loadgen cores",
            "RSS MiB",
        ]
        rows = [
            [
                _name(r),
                _cell(r, "editors", 0),
                _cell(r, "updates_per_s"),
                _cell(r, "deliveries_per_s", 0),
                _cell(r, "p50_ms"),
                _cell(r, "p99_ms"),
                _cell(r, "max_ms"),
                _cell(r, "probe_p50_ms"),
                _cell(r, "probe_p99_ms"),
                _cell(r, "loss", 0),
                _cell(r, "cpu_us_per_update", 0),
                _cell(r, "server_cores", 2),
                _cell(r, "redis_cpu_us_per_update", 0),
                _cell(r, "postgres_cpu_us_per_update", 0),
                _cell(r, "loadgen_cores", 2),
                _cell(r, "rss_mib", 0),
            ]
            for r in edit
        ]
        out.append(_table(headers, rows))
    memory = [r for r in results if r.scenario == "docs-memory"]
    if memory:
        headers = [
            "docs-memory",
            "documents",
            "connections",
            "KiB per idle connection",
            "KiB per open document",
            "RSS before/idle/docs MiB (median)",
            "join s",
        ]
        rows = []
        for r in memory:
            rss = "/".join(
                _cell(r, key, 0, median_only=True)
                for key in ("rss_before_mib", "rss_idle_mib", "rss_docs_mib")
            )
            rows.append(
                [
                    _name(r),
                    _cell(r, "documents", 0),
                    _cell(r, "connections", 0),
                    _cell(r, "kib_per_idle_connection"),
                    _cell(r, "kib_per_document"),
                    rss,
                    _cell(r, "join_s"),
                ]
            )
        out.append(_table(headers, rows))
    log = [r for r in results if r.scenario == "docs-log"]
    if log:
        headers = [
            "docs-log",
            "characters",
            "typing s",
            "log bytes per 10k chars",
            "snapshot/state writes",
            "all bytes written per 10k chars",
            "document state bytes",
            "PostgreSQL CPU µs/update",
        ]
        rows = [
            [
                _name(r),
                _cell(r, "chars", 0),
                _cell(r, "typing_s"),
                _cell(r, "log_bytes_per_10k_chars", 0),
                _cell(r, "snapshot_writes", 0),
                _cell(r, "bytes_written_per_10k_chars", 0),
                _cell(r, "state_bytes", 0),
                _cell(r, "postgres_cpu_us_per_update", 0),
            ]
            for r in log
        ]
        out.append(_table(headers, rows))
        compacted = [r for r in log if r.compaction]
        if compacted:
            headers = [
                "compaction (storage layer)",
                "log rows",
                "log bytes",
                "compact s",
                "of which fold s",
                "snapshot bytes",
                "cold load s (before)",
                "append s (1,000 rows a batch)",
            ]
            rows = [
                [
                    "Tandem, PostgreSQL",
                    _cell(r, "updates", 0, "compaction"),
                    _cell(r, "log_bytes", 0, "compaction"),
                    _cell(r, "compact_s", 2, "compaction"),
                    _cell(r, "fold_s", 2, "compaction"),
                    _cell(r, "snapshot_bytes", 0, "compaction"),
                    _cell(r, "load_s", 2, "compaction"),
                    _cell(r, "append_s", 1, "compaction"),
                ]
                for r in compacted
            ]
            out.append(_table(headers, rows))
    return "\n\n".join(out)


FAIRNESS_NOTE = (
    "Fairness: Tandem appends every update to PostgreSQL (batched every 0.25 s per node) and "
    "relays raw updates over Redis pub/sub; Hocuspocus (extension-redis) relays each change as "
    "a state-vector exchange over Redis and, with persistence on, rewrites each document's "
    "whole state to PostgreSQL 2 s after the last change (at most every 10 s). Tandem editors "
    "send each keystroke at once (the browser provider batches 20 ms windows); Hocuspocus "
    "editors are @hocuspocus/provider. Editors, servers, Redis and PostgreSQL share the "
    "machine's cores."
)
