"""Flight webhook ingest: signed deliveries posted as fast as a node takes them.

Usage: .venv/bin/python -m bench.webhooks [--deliveries 2000] [--concurrency 16] [--flights 200]
       [--batch 1] [--postgres] [--url URL --secret SECRET]

Starts one node (SQLite unless --postgres; or uses --url with its webhook --secret), then
posts N deliveries signed like a provider (HMAC-SHA256 over "<timestamp>." + body, see
server/api/flights.py), each moving ``--batch`` flights' positions and now and then their
gate, with ``--concurrency`` requests in flight. Every delivery is new (no replays), so each
one is verified, claimed, applied, written to history and the outbox in one transaction.
Reports deliveries/s and latency percentiles. Bounded: stops after N deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from server.api.flights import sign
from tests.support.databases import postgres_database
from tests.support.live import live_server, server_env

SECRET = "bench-webhook-secret"
START = datetime(2026, 11, 23, 6, tzinfo=UTC)


def delivery(i: int, flights: int, batch: int) -> bytes:
    updates = []
    for j in range(batch):
        k = i * batch + j
        n, lap = k % flights, k // flights  # each lap moves every flight once
        update: dict[str, object] = {
            "id": f"BW{n:04d}",
            "number": f"BW{n}",
            "date": "2026-11-23",
            "origin": "AMS",
            "destination": "LIS",
            # Increasing per flight, so no update is stale (each one is applied).
            "provider_ts": (START + timedelta(seconds=k)).isoformat(),
            "position": {"lat": 40 + lap % 400 / 20, "lon": 4.0, "altitude": 11000.0},
        }
        if lap % 10 == 0:
            update["gate"] = f"G{lap % 40}"
        updates.append(update)
    body = updates[0] if batch == 1 else {"updates": updates}
    return json.dumps(body).encode()


async def run(
    url: str, secret: bytes, deliveries: int, concurrency: int, flights: int, batch: int
) -> None:
    # Warm-up deliveries (connections, the flights' first rows) come first in provider time
    # too, so every measured update is newer than the stored state and is applied.
    warm = [delivery(i, flights, batch) for i in range(-min(flights, 50), 0)]
    bodies = [delivery(i, flights, batch) for i in range(deliveries)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    applied = [0]  # updates that changed a flight (an out-of-order one is ignored)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(queue: Iterator[bytes]) -> None:
            for body in queue:
                stamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-Tandem-Timestamp": stamp,
                    "X-Tandem-Signature": sign(secret, stamp, body),
                }
                sent = time.perf_counter()
                async with http.post(
                    f"{url}/api/webhooks/flights", data=body, headers=headers
                ) as r:
                    answer = await r.json()
                latencies.append(time.perf_counter() - sent)
                statuses[r.status] += 1
                results = answer.get("results", []) if isinstance(answer, dict) else []
                applied[0] += sum(1 for result in results if result.get("changed"))

        # Warm up (connections, first flights created) outside the measurement.
        warm_queue = iter(warm)
        await asyncio.gather(*(worker(warm_queue) for _ in range(concurrency)))
        latencies.clear()
        statuses.clear()
        applied[0] = 0
        queue = iter(bodies)
        started = time.perf_counter()
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    measured = len(latencies)
    cuts = (
        statistics.quantiles(latencies, n=100, method="inclusive") if measured > 1 else [0.0] * 99
    )
    print(
        f"{measured} deliveries ({batch} update(s) each) in {elapsed:.2f}s: "
        f"{measured / elapsed:.0f} deliveries/s, {measured * batch / elapsed:.0f} updates/s; "
        f"latency ms p50 {cuts[49] * 1000:.1f} p90 {cuts[89] * 1000:.1f} "
        f"p99 {cuts[98] * 1000:.1f} max {max(latencies) * 1000:.1f}; "
        f"statuses {dict(statuses)}; {applied[0]} of {measured * batch} updates applied"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--flights", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1, help="flight updates per delivery (≤100)")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    parser.add_argument("--url", help="an already running node (needs --secret)")
    parser.add_argument("--secret", default=SECRET, help="its TANDEM_FLIGHTS_WEBHOOK_SECRET")
    args = parser.parse_args()
    if not 1 <= args.batch <= 100 or args.deliveries < 1 or args.concurrency < 1:
        parser.error("--batch must be 1-100; --deliveries and --concurrency at least 1")
    work = (args.deliveries, args.concurrency, args.flights, args.batch)
    if args.url:
        asyncio.run(run(args.url.rstrip("/"), args.secret.encode(), *work))
        return
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        env = {"TANDEM_FLIGHTS_WEBHOOK_SECRET": SECRET, "TANDEM_LOG_LEVEL": "warning"}
        if args.postgres:
            env["TANDEM_DATABASE_URL"] = stack.enter_context(postgres_database())
            migrate = [sys.executable, "-m", "server", "migrate"]
            subprocess.run(migrate, env=server_env(Path(tmp), env), check=True, timeout=60)
        node = stack.enter_context(live_server(Path(tmp), env))
        asyncio.run(run(node.url, SECRET.encode(), *work))


if __name__ == "__main__":
    main()
