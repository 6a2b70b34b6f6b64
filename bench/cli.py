"""Benchmark Tandem against a bare python-socketio server and Node's socket.io, side by side.

Usage: python -m bench [--quick] [--servers tandem,tandem2,bare,node] [--scenarios fanout1k,...]
       (or `tandem bench ...`)

Each server runs as one process on loopback (tandem2: two Tandem processes sharing the Redis at
TANDEM_BENCH_REDIS_URL, default 127.0.0.1:6379, under a key prefix of its own), started fresh
for every scenario; Node
socket.io-client workers (websocket transport) connect, subscribe and record latency while a
publisher worker ramps the publish rate. Prints a Markdown table, writes JSON and a PNG plot.
The load generator runs on the same machine as the server and shares its cores.
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

from bench.options import QUICK_CLIENTS, SCENARIOS, Options
from bench.processes import NODE_DIR, ROOT, ensure_node_modules
from bench.procstat import load_average
from bench.report import plot, table, write_json
from bench.scenarios import Result, run_scenario
from bench.targets import SERVERS

SHARED_CORES_NOTE = (
    "The load generator (Node socket.io-client workers) runs on the same machine and shares "
    "its {cpus} cores with the server under test; figures are ratios within one run, not "
    "absolute capacities."
)


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
        default="tandem,tandem2,bare,node",
        help=f"comma-separated: {', '.join(SERVERS)}",
    )
    add("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenario names")
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
    add("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json", help="JSON path")
    add("--plot", type=Path, help="PNG path (default: next to --out, .png)")
    args = parser.parse_args(argv)
    options = Options(
        servers=_names(args.servers, SERVERS),
        scenarios=[SCENARIOS[name] for name in _names(args.scenarios, list(SCENARIOS))],
    )
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


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("python-socketio", "python-engineio", "uvicorn", "uvloop", "websockets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    versions["node"] = node.stdout.strip()
    for package in ("socket.io", "socket.io-client"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        if manifest.exists():
            import json

            versions[package] = json.loads(manifest.read_text())["version"]
    return versions


async def run_all(options: Options) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        for scenario in options.scenarios:
            print(f"{scenario.name}: {scenario.description}", flush=True)
            for server in options.servers:
                where = Path(tmp) / f"{scenario.name}-{server}"
                results.append(await run_scenario(server, scenario, options, where))
    return results


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
    print(f"tandem bench: servers {', '.join(options.servers)}; {meta['note']}", flush=True)
    began = time.monotonic()
    results = asyncio.run(run_all(options))
    meta["seconds"] = round(time.monotonic() - began, 1)
    meta["load_average_after"] = load_average()
    write_json(out, meta, results)
    picture = args.plot or out.with_suffix(".png")
    plotted = plot(picture, results)
    print()
    print(table(results, options.fractions))
    print()
    print(meta["note"])
    before, after = meta["load_average_before"][0], meta["load_average_after"][0]
    print(f"Load average (1 min) before {before:.2f}, after {after:.2f}", end="")
    print(": other work was running, the figures are noisy." if before > 0.5 else ".")
    print(f"JSON: {out}")
    print(f"plot: {picture}" if plotted else "plot: skipped (pip install -e '.[bench]')")
    failed = [r for r in results if r.errors or r.loss or r.disorder or r.dropped]
    for r in failed:
        counts = f"loss {r.loss}, out of order {r.disorder}, connections dropped {r.dropped}"
        print(f"{r.server} {r.scenario}: {counts}; {'; '.join(r.errors) or 'no errors'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
