"""Benchmark Tandem against a bare python-socketio server and Node's socket.io, side by side.

Usage: python -m bench [--quick] [--servers tandem,tandem2,bare,node] [--scenarios fanout1k,...]
       python -m bench [--quick] --scenarios docs-edit,docs-memory,docs-log [--repeat 3]
       (or `tandem bench ...`; `--scenarios docs` means the three documents scenarios)

       python -m bench --scenarios reconnect [--reconnect-clients 10000 --reconnect-channels 20]

Each server runs as one process on loopback (tandem2: two Tandem processes sharing the Redis at
TANDEM_BENCH_REDIS_URL, default 127.0.0.1:6379, under a key prefix of its own), started fresh
for every scenario; Node
socket.io-client workers (websocket transport) connect, subscribe and record latency while a
publisher worker ramps the publish rate. Prints a Markdown table, writes JSON and a PNG plot.
The load generator runs on the same machine as the server and shares its cores.

The collaborative-documents scenarios (docs-edit, docs-memory, docs-log: bench/docs.py) compare
Tandem with Hocuspocus (servers tandem/tandem2 and hocuspocus/hocuspocus2 select the families;
each scenario has its own node count) and need PostgreSQL (TANDEM_BENCH_POSTGRES_URL).

The reconnect scenario (bench/reconnect.py) restarts one Tandem node (streams in the Redis at
TANDEM_BENCH_REDIS_URL) under clients holding many channels each, and reports how long each
takes to recover all of them, and that none was refused or lost.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.docs import (
    DOCS_SCENARIOS,
    FAIRNESS_NOTE,
    DocsOptions,
    DocsResult,
    run_docs,
    tables as docs_tables,
)
from bench.options import QUICK_CLIENTS, SCENARIOS, Options
from bench.processes import NODE_DIR, ROOT, ensure_node_modules
from bench.procstat import load_average
from bench.reconnect import (
    SCENARIO as RECONNECT,
    ReconnectOptions,
    ReconnectResult,
    run_reconnect,
    table as reconnect_table,
)
from bench.report import plot, table, write_json
from bench.scenarios import Result, run_scenario
from bench.targets import SERVERS

SHARED_CORES_NOTE = (
    "The load generator (Node socket.io-client workers) runs on the same machine and shares "
    "its {cpus} cores with the server under test; figures are ratios within one run, not "
    "absolute capacities."
)


DOCS_SERVERS = ("hocuspocus", "hocuspocus2")
DEFAULT_SERVERS = "tandem,tandem2,bare,node"
DOCS_ALIAS = "docs"


def _names(value: str, known: tuple[str, ...] | list[str]) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(known)}; got {value!r}")
    return names


def parse_args(argv: list[str] | None) -> tuple[Options, Path, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="tandem bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small run: 100-250 clients, short steps")
    add(
        "--servers",
        help=f"comma-separated: {', '.join((*SERVERS, *DOCS_SERVERS))} (default "
        f"{DEFAULT_SERVERS}; for the documents scenarios tandem and hocuspocus)",
    )
    add(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated scenario names: "
        f"{', '.join((*SCENARIOS, *DOCS_SCENARIOS, RECONNECT))}, "
        f"or '{DOCS_ALIAS}' for the documents ones",
    )
    add("--clients", type=int, help="clients in every scenario (overrides the defaults)")
    add("--duration", type=float, help="seconds of publishing per step (default 3, quick 1.5)")
    add("--max-steps", type=int, help="ramp steps at most (default 10, quick 5)")
    add(
        "--start-rate", type=float, help="first offered deliveries/s (default 2500, one-to-one 500)"
    )
    add("--refine-steps", type=int, help="steps narrowing down saturation (default 2, quick 1)")
    add("--factor", type=float, help="offered rate growth per ramp step (default 1.6)")
    add("--fractions", help="of saturation, for latency (default 0.25,0.5,0.75; quick 0.5)")
    add("--workers", type=int, help="subscriber worker processes (default 2)")
    add("--publishers", type=int, help="publisher sockets (default 4)")
    add("--http-connections", type=int, help="HTTP publisher connections (default 32)")
    add("--deflate", action="store_true", help="clients offer permessage-deflate, as browsers do")
    add(
        "--client",
        choices=("socketio", "ws"),
        default="socketio",
        help="subscribers: socket.io-client, or the same protocol over `ws` (lighter)",
    )
    docs = parser.add_argument_group("collaborative documents (docs-*)")
    dadd = docs.add_argument
    dadd("--repeat", type=int, help="runs of each documents scenario and server (default 1)")
    dadd("--docs-editors", type=int, help="docs-edit: editors on the document (default 50)")
    dadd("--docs-rate", type=float, help="docs-edit: keystrokes/s per editor (default 10)")
    dadd("--docs-seconds", type=float, help="docs-edit: seconds of typing measured (default 20)")
    dadd(
        "--docs-awareness-every",
        type=int,
        help="a cursor (awareness) update every N keystrokes, 0 for none (default 5)",
    )
    dadd("--docs-workers", type=int, help="Node editor processes (default 2)")
    dadd("--docs-nodes", type=int, help="docs-edit: server nodes (default 2)")
    dadd(
        "--docs-redis",
        choices=("private", "shared"),
        help="a private redis-server per run (its CPU is reported; default), or the shared one "
        "at TANDEM_BENCH_REDIS_URL",
    )
    dadd("--docs-memory-docs", type=int, help="docs-memory: open documents (default 1000)")
    dadd("--docs-log-chars", type=int, help="docs-log: characters typed (default 10000)")
    dadd("--docs-compact-updates", type=int, help="docs-log: log rows compacted (default 100000)")
    dadd(
        "--hocuspocus-no-persist",
        action="store_true",
        help="Hocuspocus without its PostgreSQL storage (docs-log needs it)",
    )
    storm = parser.add_argument_group("reconnect storm (reconnect)")
    sadd = storm.add_argument
    sadd("--reconnect-clients", type=int, help="clients (default 10000, quick 200)")
    sadd("--reconnect-channels", type=int, help="channels each client holds (default 20)")
    sadd("--reconnect-pool", type=int, help="distinct channels (default 1000, quick 100)")
    sadd("--reconnect-workers", type=int, help="Node processes holding the clients (default 2)")
    add("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json", help="JSON path")
    add("--plot", type=Path, help="PNG path (default: next to --out, .png)")
    args = parser.parse_args(argv)
    known = [*SCENARIOS, *DOCS_SCENARIOS, RECONNECT]
    wanted = ",".join(
        ",".join(DOCS_SCENARIOS) if part.strip() == DOCS_ALIAS else part
        for part in args.scenarios.split(",")
    )
    scenario_names = list(dict.fromkeys(_names(wanted, known)))
    args.docs_scenarios = [DOCS_SCENARIOS[n] for n in scenario_names if n in DOCS_SCENARIOS]
    args.reconnect = _reconnect_options(args) if RECONNECT in scenario_names else None
    servers = _names(args.servers or DEFAULT_SERVERS, (*SERVERS, *DOCS_SERVERS))
    args.docs_families = (
        sorted({name.rstrip("2") for name in servers} & {"tandem", "hocuspocus"})
        if args.servers
        else ["tandem", "hocuspocus"]
    )
    options = Options(
        servers=[name for name in servers if name in SERVERS],
        scenarios=[SCENARIOS[n] for n in scenario_names if n in SCENARIOS],
    )
    args.docs_options = _docs_options(args)
    if args.quick:
        options.scenarios = [
            dataclasses.replace(s, clients=QUICK_CLIENTS[s.name]) for s in options.scenarios
        ]
        options.duration, options.max_steps, options.fractions = 1.5, 5, [0.5]
        options.refine_steps = 1
        options.drain_s, options.stall_s, options.settle_s = 10.0, 3.0, 1.0
    if args.clients:
        options.scenarios = [
            dataclasses.replace(s, clients=args.clients) for s in options.scenarios
        ]
    if args.start_rate:
        options.scenarios = [
            dataclasses.replace(s, start_rate=args.start_rate) for s in options.scenarios
        ]
    knobs = ("duration", "max_steps", "refine_steps", "factor", "workers", "publishers")
    for name in (*knobs, "http_connections"):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    if args.fractions:
        options.fractions = [float(f) for f in args.fractions.split(",")]
    options.deflate, options.client = args.deflate, args.client
    return options, args.out, args


def _reconnect_options(args: argparse.Namespace) -> ReconnectOptions:
    options = ReconnectOptions.quick() if args.quick else ReconnectOptions()
    for name in ("clients", "channels", "pool", "workers"):
        value = getattr(args, f"reconnect_{name}")
        if value is not None:
            setattr(options, name, value)
    return options


def _docs_options(args: argparse.Namespace) -> DocsOptions:
    docs = DocsOptions.quick() if args.quick else DocsOptions()
    for flag, name in (
        ("repeat", "repeat"),
        ("docs_editors", "editors"),
        ("docs_rate", "rate"),
        ("docs_seconds", "seconds"),
        ("docs_awareness_every", "awareness_every"),
        ("docs_workers", "workers"),
        ("docs_redis", "redis"),
        ("docs_memory_docs", "memory_docs"),
        ("docs_log_chars", "log_chars"),
        ("docs_compact_updates", "compact_updates"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(docs, name, value)
    if args.hocuspocus_no_persist:
        docs.hocuspocus_persist = False
    if args.docs_nodes:
        args.docs_scenarios = [
            dataclasses.replace(s, nodes=args.docs_nodes) if s.name == "docs-edit" else s
            for s in args.docs_scenarios
        ]
    return docs


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("python-socketio", "python-engineio", "uvicorn", "uvloop", "websockets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    versions["node"] = node.stdout.strip()
    for package in (
        "socket.io",
        "socket.io-client",
        "yjs",
        "@hocuspocus/server",
        "@hocuspocus/extension-redis",
        "@hocuspocus/provider",
    ):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        if manifest.exists():
            import json

            versions[package] = json.loads(manifest.read_text())["version"]
    return versions


async def run_all(
    options: Options, args: argparse.Namespace | None = None
) -> tuple[list[Result], list[DocsResult], list[ReconnectResult]]:
    results = []
    docs_results: list[DocsResult] = []
    reconnect_results: list[ReconnectResult] = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        for scenario in options.scenarios:
            if not options.servers:
                break
            print(f"{scenario.name}: {scenario.description}", flush=True)
            for server in options.servers:
                where = Path(tmp) / f"{scenario.name}-{server}"
                results.append(await run_scenario(server, scenario, options, where))
        if args is not None and args.docs_scenarios:
            if not args.docs_families:
                print("documents scenarios: no tandem or hocuspocus server chosen", flush=True)
            else:
                docs_results = await run_docs(
                    args.docs_scenarios, args.docs_families, args.docs_options, Path(tmp)
                )
        if args is not None and args.reconnect is not None:
            print(f"{RECONNECT}: a node restart under clients holding many channels", flush=True)
            reconnect_results.append(await run_reconnect(args.reconnect, Path(tmp) / RECONNECT))
    return results, docs_results, reconnect_results


def main(argv: list[str] | None = None) -> int:
    options, out, args = parse_args(argv)
    ensure_node_modules()
    cpus = os.cpu_count() or 1
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": cpus, "platform": platform.platform()},
        "load_average_before": load_average(),
        "versions": _versions(),
        "options": dataclasses.asdict(options),
        "note": SHARED_CORES_NOTE.format(cpus=cpus),
    }
    if args.docs_scenarios:
        meta["docs_options"] = dataclasses.asdict(args.docs_options)
        meta["docs_scenarios"] = [s.name for s in args.docs_scenarios]
        meta["docs_note"] = FAIRNESS_NOTE
    servers = options.servers if options.scenarios else []
    if args.docs_scenarios:
        servers = [*servers, *args.docs_families]
    if args.reconnect is not None and "tandem" not in servers:
        servers = [*servers, "tandem"]
    print(f"tandem bench: servers {', '.join(servers)}; {meta['note']}", flush=True)
    began = time.monotonic()
    results, docs_results, reconnect_results = asyncio.run(run_all(options, args))
    meta["seconds"] = round(time.monotonic() - began, 1)
    meta["load_average_after"] = load_average()
    if args.reconnect is not None:
        meta["reconnect_options"] = dataclasses.asdict(args.reconnect)
    write_json(out, meta, [*results, *docs_results, *reconnect_results])
    picture = args.plot or out.with_suffix(".png")
    plotted = plot(picture, results) if results else False
    if results:
        print()
        print(table(results, options.fractions))
    if docs_results:
        print()
        print(docs_tables(docs_results))
        print()
        print(FAIRNESS_NOTE)
    if reconnect_results:
        print()
        print(reconnect_table(reconnect_results))
    print()
    print(meta["note"])
    before, after = meta["load_average_before"][0], meta["load_average_after"][0]
    print(f"Load average (1 min) before {before:.2f}, after {after:.2f}", end="")
    print(": other work was running, the figures are noisy." if before > 0.5 else ".")
    print(f"JSON: {out}")
    if results:
        print(f"plot: {picture}" if plotted else "plot: skipped (pip install -e '.[bench]')")
    failed = [r for r in results if r.errors or r.loss or r.disorder or r.dropped]
    for r in failed:
        counts = f"loss {r.loss}, out of order {r.disorder}, connections dropped {r.dropped}"
        print(f"{r.server} {r.scenario}: {counts}; {'; '.join(r.errors) or 'no errors'}")
    docs_failed = [r for r in docs_results if r.failed]
    for d in docs_failed:
        runs = "; ".join(
            f"loss {run.get('loss')}, converged {run.get('converged')}, "
            f"dropped {run.get('dropped')}, errors {run.get('errors')}"
            for run in d.runs
        )
        print(f"{d.server} {d.scenario}: {runs or 'no run finished'}; {'; '.join(d.errors)}")
    reconnect_failed = [r for r in reconnect_results if r.failed]
    for storm in reconnect_failed:
        print(f"reconnect: {'; '.join(storm.errors) or 'refused, unrecovered or missing'}")
    return 1 if failed or docs_failed or reconnect_failed else 0


if __name__ == "__main__":
    sys.exit(main())
