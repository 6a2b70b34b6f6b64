"""Jobs under load: many concurrent jobs, progress posted over HTTP, every job watched.

Usage: .venv/bin/python -m bench.jobs [--nodes 1|2] [--jobs 1000] [--updates 20] [--rate 500]

Creates the jobs, starts Node socket.io-client watchers (one connection per job, on the last
node, with each job's watch token), then workers post progress (and finally complete) to the
first node at a fixed total rate. Reports updates/s sustained and update-to-watcher latency:
the watcher's clock minus the snapshot's `updated_at` (set when the change was made, before the
commit), so it covers commit, outbox relay, broker and delivery. Bounded in time; stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from bench.procstat import cpu_seconds
from tests.support.databases import postgres_database
from tests.support.live import API_KEY, ROOT, LiveServer, live_server, server_env
from tests.support.redis import broker_url, delete_prefix, unique_prefix

WATCHER = ROOT / "bench" / "node" / "watch_jobs.js"


async def run(nodes: list[LiveServer], jobs: int, updates: int, rate: float, tmp: Path) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    # aiohttp, not httpx: at a few hundred requests/s httpx's own CPU cost becomes the
    # bottleneck of the load generator (measured: ~170/s vs ~5,000/s against /api/publish).
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        created = []
        for i in range(jobs):
            async with http.post(
                f"{nodes[0].url}/api/jobs", json={"owner": f"u{i % 50}", "kind": "bench"}
            ) as response:
                response.raise_for_status()
                body = await response.json()
            created.append({"id": body["job"]["id"], "token": body["watch_token"]})
        (tmp / "jobs.json").write_text(json.dumps(created))
        total = jobs * (updates + 1)
        # The watchers stop when every job finished; the budget only bounds a server that
        # falls far behind the asked rate (then the posting itself takes longer).
        budget = 4 * total / rate + 60
        watcher = await asyncio.create_subprocess_exec(
            "node",
            str(WATCHER),
            nodes[-1].url,
            str(tmp / "jobs.json"),
            str(budget),
            stdout=asyncio.subprocess.PIPE,
        )
        assert watcher.stdout is not None
        ready = await asyncio.wait_for(watcher.stdout.readline(), 120)
        assert ready.strip() == b"ready", ready
        start = time.monotonic()
        cpu_before = server_cpu(nodes)
        failures: dict[int, int] = {}
        calls = asyncio.Semaphore(64)

        async def worker(index: int, job_id: str) -> None:
            # One worker per job, posting its updates in order, paced so that all workers
            # together post `rate` calls per second.
            for step in range(updates + 1):
                slot = start + (step * jobs + index) / rate
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                if step < updates:
                    route = f"/api/jobs/{job_id}/progress"
                    body: dict[str, object] = {
                        "progress": round(100 * (step + 1) / (updates + 1)),
                        "stage": f"step {step + 1}",
                    }
                else:
                    route, body = f"/api/jobs/{job_id}/complete", {"result": {"ok": True}}
                async with calls, http.post(f"{nodes[0].url}{route}", json=body) as response:
                    await response.read()
                if response.status != 200:
                    failures[response.status] = failures.get(response.status, 0) + 1

        await asyncio.gather(*(worker(i, job["id"]) for i, job in enumerate(created)))
        elapsed = time.monotonic() - start
        out, _ = await asyncio.wait_for(watcher.communicate(), budget + 30)
        cpu = server_cpu(nodes) - cpu_before
    result = json.loads(out.decode().strip().splitlines()[-1])
    print(
        f"nodes={len(nodes)} jobs={jobs} updates/job={updates + 1} target={rate:.0f}/s: "
        f"posted {total} in {elapsed:.1f}s ({total / elapsed:.0f}/s, "
        f"failed: {failures or 'none'}); "
        f"watchers got {result['updates']} updates, {result['finished']} jobs finished, "
        f"{result['stale']} stale dropped; latency ms p50 {result['p50']} p99 {result['p99']} "
        f"max {result['max']}; server CPU {1e6 * cpu / total:.0f} µs/update"
        f" ({cpu / elapsed:.2f} cores)"
    )


def server_cpu(nodes: list[LiveServer]) -> float:
    """CPU seconds of the server processes (0 for a server this benchmark did not start)."""
    return sum(cpu_seconds(node.pid) for node in nodes if node.process is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=19, help="progress updates per job")
    parser.add_argument("--rate", type=float, default=500.0, help="HTTP calls per second")
    parser.add_argument("--url", help="use this running server (API key from TANDEM_API_KEYS)")
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL instead of SQLite (always with 2 nodes)"
    )
    args = parser.parse_args()
    if args.url:
        with tempfile.TemporaryDirectory() as tmp:
            node = LiveServer(args.url, 0, None, Path(tmp) / "log", {})  # type: ignore[arg-type]
            asyncio.run(run([node], args.jobs, args.updates, args.rate, Path(tmp)))
        return
    prefix = unique_prefix()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        env: dict[str, str] = {}
        if args.nodes == 2 or args.postgres:
            database = stack.enter_context(postgres_database())
            env = {"TANDEM_DATABASE_URL": database}
            if args.nodes == 2:
                env["TANDEM_BROKER_URL"] = broker_url(prefix)
            import subprocess
            import sys

            subprocess.run(
                [sys.executable, "-m", "server", "migrate"],
                env=server_env(Path(tmp), env),
                check=True,
                timeout=60,
            )
        nodes = [
            stack.enter_context(live_server(Path(tmp) / f"n{i}", env)) for i in range(args.nodes)
        ]
        asyncio.run(run(nodes, args.jobs, args.updates, args.rate, Path(tmp)))
    if args.nodes == 2:
        asyncio.run(delete_prefix(prefix))


if __name__ == "__main__":
    main()
