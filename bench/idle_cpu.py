"""Idle CPU: what N connected, subscribed, silent websocket connections cost a Tandem node.

Usage: .venv/bin/python -m bench.idle_cpu [--connections 20000] [--ping-interval 5]
       [--window 12] [--workers 2] [--out FILE]

An idle connection costs the server its Engine.IO pings (one every TANDEM_PING_INTERVAL_S, 25 s
by default, answered by a pong) and nothing else. The node runs with a shorter interval so that
the measuring window covers several pings; the server's CPU over the window, less what the same
node burns over the same window with no connection (its timers), divided by the pings it sent
(connections x window / interval) is the CPU per ping, which does not depend on the interval:
at the default interval the cores per 10,000 idle connections are per-ping cost x 10,000 / 25.
The clients are raw `ws` Engine.IO clients (bench/node/loadgen.js, client "ws"), one room
channel each. Bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.loadgen import Worker, split
from bench.processes import ensure_node_modules
from bench.procstat import cpu_seconds, load_average, rss_bytes
from bench.targets import started

DEFAULT_PING_INTERVAL_S = 25.0  # the server's default (server.config.Settings.ping_interval_s)


@dataclass
class IdleResult:
    connections: int
    ping_interval_s: float
    window_s: float
    load_before: list[float]
    connected: int = 0
    connect_s: float = 0.0
    baseline_cpu_s: float = 0.0  # the node with no connection, over one window
    idle_cpu_s: float = 0.0  # the node with every connection, over one window
    pings: float = 0.0
    us_per_ping: float | None = None
    cores_per_10k_at_interval: float | None = None
    cores_per_10k_at_default: float | None = None
    rss_mib: float | None = None
    dropped: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"idle: {self.connected}/{self.connections} connections (in {self.connect_s}s), ping "
            f"every {self.ping_interval_s}s, window {self.window_s}s: server CPU "
            f"{self.idle_cpu_s}s (no connections: {self.baseline_cpu_s}s), "
            f"{self.us_per_ping} µs per ping; per 10,000 idle connections "
            f"{self.cores_per_10k_at_interval} cores at this interval, "
            f"{self.cores_per_10k_at_default} at the default {DEFAULT_PING_INTERVAL_S:.0f}s; "
            f"RSS {self.rss_mib} MiB; dropped {self.dropped}; load before {self.load_before}"
        )


async def window_cpu(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)  # the measuring window itself, not a synchronisation
    return cpu_seconds(pid) - before


async def run(args: argparse.Namespace, tmp: Path) -> IdleResult:
    result = IdleResult(
        args.connections, args.ping_interval, args.window, [round(x, 2) for x in load_average()]
    )
    env = {"TANDEM_PING_INTERVAL_S": str(args.ping_interval)}
    bound = 120 + args.connections / 20 + 3 * args.window + 2 * args.ping_interval
    async with started("tandem", tmp / "server", env) as target:
        pid = target.pids[0]
        await asyncio.sleep(1)  # let the node's start-up work end before its baseline
        result.baseline_cpu_s = round(await window_cpu(pid, args.window), 3)
        count = max(1, min(args.workers, args.connections))
        shares = split(args.connections, count)
        workers = [await Worker.start(tmp / f"idle-{i}.log", bound) for i in range(count)]
        try:
            began = time.monotonic()
            replies = await asyncio.gather(
                *(
                    worker.call(
                        {
                            "cmd": "subscribe",
                            "url": target.url,
                            "token": target.token,
                            "count": n,
                            "prefix": "room:idle-",
                            "start": start,
                            "concurrency": 50,
                            "deflate": False,
                            "client": "ws",
                        },  # fmt: skip
                        60 + args.connections / 50,
                    )
                    for worker, (start, n) in zip(workers, shares, strict=True)
                )
            )
            result.connect_s = round(time.monotonic() - began, 1)
            result.connected = sum(reply["ok"] for reply in replies)
            for reply in replies:
                result.errors.extend(f"connect: {n} x {e}" for e, n in reply["errors"].items())
            # One interval for the connect burst's aftermath (first pings, GC) to pass.
            await asyncio.sleep(args.ping_interval)
            result.idle_cpu_s = round(await window_cpu(pid, args.window), 3)
            result.rss_mib = round(rss_bytes(pid) / 2**20, 1)
            counts = await asyncio.gather(*(w.call({"cmd": "count", "step": -1}) for w in workers))
            result.dropped = sum(c["dropped"] for c in counts)
        finally:
            await asyncio.gather(*(worker.close() for worker in workers))
    if result.connected:
        result.pings = round(result.connected * args.window / args.ping_interval, 1)
        extra = max(0.0, result.idle_cpu_s - result.baseline_cpu_s)
        per_ping = extra / result.pings
        result.us_per_ping = round(per_ping * 1e6, 1)
        at = 10_000 * per_ping
        result.cores_per_10k_at_interval = round(at / args.ping_interval, 4)
        result.cores_per_10k_at_default = round(at / DEFAULT_PING_INTERVAL_S, 4)
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--ping-interval", type=float, default=5.0, help="seconds, for the run")
    parser.add_argument("--window", type=float, default=12.0, help="seconds of measurement")
    parser.add_argument("--workers", type=int, default=2, help="Node client processes")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.ping_interval <= 0 or args.workers < 1:
        parser.error("--connections, --ping-interval and --workers must be positive")
    if args.window < 2 * args.ping_interval:
        parser.error("--window must cover at least two ping intervals")
    return args


async def main_async(args: argparse.Namespace) -> IdleResult:
    ensure_node_modules()
    with tempfile.TemporaryDirectory() as tmp:
        return await run(args, Path(tmp))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = asyncio.run(main_async(args))
    print(result.line(), flush=True)
    if args.out:
        args.out.write_text(json.dumps(asdict(result), indent=2))
    failed = result.errors or result.dropped or result.connected < result.connections
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
