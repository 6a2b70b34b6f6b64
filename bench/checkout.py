"""Checkout at scale: many pages each watching its own job, workers posting progress over HTTP.

Usage: .venv/bin/python -m bench.checkout [--pages 10000] [--rate 10000] [--seconds 10]
       [--workers 2] [--slow 20] [--out FILE]

One Tandem node (SQLite, as ``tandem bench`` starts it). N jobs are created; Node pages
(bench/node/checkout_pages.js) connect, one socket.io-client connection per job, and subscribe
to ``job:<id>`` with the job's watch token. W worker processes (bench/checkout_worker.py) post
``rate * seconds / pages`` progress updates per job, at ``rate`` calls/s in total, through
``POST /api/jobs/{id}/progress`` (one call per update: there is no batch endpoint for it).

Latency: from the worker's send time (carried in the update's ``message``) to the page's
receipt, on every page but the slow ones. Loss: every page must see its job's last accepted
update; a page that is not slow must see every one of them. Slow pages subscribe to a filler
channel too and stop reading once subscribed; the driver then publishes enough filler to fill
their kernel buffers, so their server-side queue holds the job's progress and coalesces it
(`job.progress` is a latest-value event). When the workers are done the slow pages read again
and must end on the final update having received fewer. The server does not expose how many
frames it coalesced on /metrics, hence that count from the pages. Bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from bench.histogram import Histogram, rounded
from bench.processes import NODE_DIR, ROOT, die_with_parent, ensure_node_modules
from bench.procstat import cpu_seconds, load_average
from bench.targets import JWT_SECRET, Target, started

PAGES_JS = NODE_DIR / "checkout_pages.js"
FILLER = "room:checkout-filler"
FILLER_BYTES = 60_000  # below the default 64 KiB payload limit
# The server caps a connection's kernel send buffer (a quarter of the 1 MiB client bound, which
# Linux doubles) and pauses at its transport's high-water mark; the page's receive buffer adds
# ~128 KiB. Measured on Linux 6.x loopback: 12 x 60 kB did not pause the server, 14 to 18 did,
# 20 and more overflowed the 1 MiB bound (the page is cut off as slow); 16 is in the middle.
FILLER_COUNT = 16
# Every page must have seen its job's last update within this long after the workers are done.
DRAIN_S = 30.0


@dataclass
class CheckoutResult:
    pages: int
    slow_pages: int
    workers: int
    target_rate: float
    seconds: float
    steps_per_job: int
    load_before: list[float]
    posted: int = 0
    accepted: int = 0
    unsent: int = 0
    post_failures: dict[str, int] = field(default_factory=dict)
    post_s: float = 0.0
    achieved_rate: float = 0.0
    received: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    # Send to answer of the progress calls, at the workers (HTTP pool wait, server, commit).
    call_p50_ms: float | None = None
    call_p99_ms: float | None = None
    final_missing: int = 0  # pages that never saw their job's last accepted update
    intermediate_missing: int = 0  # updates a page that is not slow did not see
    slow_received: int = 0
    slow_expected: int = 0
    slow_coalesced_pages: int = 0  # slow pages that got fewer updates but the final one
    dropped_pages: int = 0
    server_cpu_s: float = 0.0
    server_cores: float = 0.0
    server_us_per_update: float | None = None
    worker_cores: float = 0.0
    pages_cores: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        return bool(self.final_missing or self.intermediate_missing or self.dropped_pages)

    def line(self) -> str:
        return (
            f"checkout: {self.pages} pages ({self.slow_pages} slow), {self.steps_per_job} "
            f"updates/job, target {self.target_rate:.0f}/s by {self.workers} workers: posted "
            f"{self.posted} in {self.post_s:.1f}s ({self.achieved_rate:.0f}/s, accepted "
            f"{self.accepted}, unsent {self.unsent}, failed {self.post_failures or 'none'}); "
            f"latency ms p50 {self.p50_ms} p99 {self.p99_ms} max {self.max_ms} (the calls' "
            f"answers p50 {self.call_p50_ms} p99 {self.call_p99_ms}); final missing "
            f"{self.final_missing}, intermediate missing {self.intermediate_missing}, dropped "
            f"{self.dropped_pages}; slow pages got {self.slow_received}/{self.slow_expected} "
            f"({self.slow_coalesced_pages}/{self.slow_pages} coalesced, final seen); server "
            f"{self.server_cores} cores ({self.server_us_per_update} µs/update), workers "
            f"{self.worker_cores}, pages {self.pages_cores}; load before {self.load_before}"
        )


def slow_token(job_id: str) -> str:
    """The job's watch token plus the filler channel (the bench's own signing secret)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": f"watch:{job_id}", "iat": now, "exp": now + 3600}
    claims["channels"] = [f"job:{job_id}", FILLER]
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def create_jobs(http: aiohttp.ClientSession, url: str, pages: int, slow: int) -> list[dict]:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> dict[str, Any]:
        async with (
            gate,
            http.post(
                f"{url}/api/jobs", json={"owner": f"shopper{i}", "kind": "checkout"}
            ) as response,
        ):
            response.raise_for_status()
            body = await response.json()
        job_id = body["job"]["id"]
        # Spread the slow pages over the list (and so over the workers).
        is_slow = slow > 0 and i % max(1, pages // slow) == 0 and i // max(1, pages // slow) < slow
        token = slow_token(job_id) if is_slow else body["watch_token"]
        return {"id": job_id, "token": token, "slow": is_slow}

    return list(await asyncio.gather(*(one(i) for i in range(pages))))


async def run(target: Target, args: argparse.Namespace, tmp: Path) -> CheckoutResult:
    steps = max(1, round(args.rate * args.seconds / args.pages))
    result = CheckoutResult(
        args.pages, 0, args.workers, args.rate, args.seconds, steps,
        [round(x, 2) for x in load_average()],
    )  # fmt: skip
    url, pid = target.url, target.pids[0]
    headers = {"Authorization": f"Bearer {target.api_key}"}
    budget = 3 * args.seconds + 30  # posting; a server far behind the rate is cut off there
    async with aiohttp.ClientSession(headers=headers) as http:
        jobs = await create_jobs(http, url, args.pages, args.slow)
        result.slow_pages = sum(job["slow"] for job in jobs)
        (tmp / "jobs.json").write_text(json.dumps(jobs))
        pages = await asyncio.create_subprocess_exec(
            "node", str(PAGES_JS), str(tmp / "jobs.json"), str(int(budget + 120 + args.pages / 50)),
            cwd=NODE_DIR, env={**os.environ, "CHECKOUT_URL": url},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent, limit=1 << 26,
        )  # fmt: skip
        assert pages.stdin is not None and pages.stdout is not None
        try:
            ready = await asyncio.wait_for(pages.stdout.readline(), 60 + args.pages / 50)
            if ready.strip() != b"ready":
                raise RuntimeError(f"pages: {ready!r}")
            for _ in range(FILLER_COUNT if result.slow_pages else 0):
                body = {"channel": FILLER, "event": "bench.fill", "data": "x" * FILLER_BYTES}
                async with http.post(f"{url}/api/publish", json=body) as response:
                    response.raise_for_status()
            specs = split_jobs(jobs, args, steps, url, target.api_key, budget, tmp)
            cpu0, pages_cpu0 = cpu_seconds(pid), cpu_seconds(pages.pid)
            began = time.monotonic()
            outcomes, worker_cpu = await run_workers(specs, budget + 60)
            last: dict[str, int] = {}
            for outcome in outcomes:
                last.update(outcome["last"])
            pages.stdin.write(b"resume\n")
            await pages.stdin.drain()
            await asyncio.wait_for(pages.stdout.readline(), 30)
            # Queued behind whatever a slow page missed: once it arrives, so did the rest.
            end = {"channel": FILLER, "event": "bench.end", "data": None}
            async with http.post(f"{url}/api/publish", json=end) as response:
                response.raise_for_status()
            expect = [last.get(job["id"], 0) for job in jobs]
            pages.stdin.write(json.dumps({"expect": expect, "within": DRAIN_S}).encode() + b"\n")
            await pages.stdin.drain()
            line = await asyncio.wait_for(pages.stdout.readline(), DRAIN_S + 30)
            wall = time.monotonic() - began
            result.server_cpu_s = round(cpu_seconds(pid) - cpu0, 2)
            result.server_cores = round(result.server_cpu_s / wall, 2)
            result.worker_cores = round(worker_cpu / wall, 2)
            # The pages exit once they reported: their CPU comes with the report.
            pages_cpu = json.loads(line)["cpu_s"] - pages_cpu0
            result.pages_cores = round(pages_cpu / wall, 2)
        finally:
            if pages.returncode is None:
                pages.stdin.close()
                try:
                    await asyncio.wait_for(pages.wait(), 10)
                except TimeoutError:
                    pages.kill()
    tally(result, outcomes, json.loads(line), jobs)
    return result


def split_jobs(
    jobs: list[dict], args: argparse.Namespace, steps: int, url: str, key: str, budget: float,
    tmp: Path,
) -> list[Path]:  # fmt: skip
    specs = []
    for w in range(args.workers):
        share = [job["id"] for job in jobs[w :: args.workers]]
        spec = {
            "url": url, "api_key": key, "jobs": share, "steps": steps,
            "rate": args.rate * len(share) / len(jobs), "budget_s": budget,
            "connections": args.connections,
        }  # fmt: skip
        path = tmp / f"worker-{w}.json"
        path.write_text(json.dumps(spec))
        specs.append(path)
    return specs


async def run_workers(specs: list[Path], within_s: float) -> tuple[list[dict], float]:
    """Start every worker process, wait for their results; their CPU seconds in total."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.checkout_worker",
            str(spec),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            limit=1 << 26,
        )  # fmt: skip
        for spec in specs
    ]
    cpu: dict[int, float] = {}

    async def finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        cpu[proc.pid] = cpu_seconds(proc.pid)  # still alive: it exits once it printed
        await proc.wait()
        return dict(json.loads(line))

    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*map(finish, procs)), within_s)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return outcomes, sum(cpu.values())


def tally(result: CheckoutResult, outcomes: list[dict], pages: dict, jobs: list[dict]) -> None:
    last: dict[str, int] = {}
    for outcome in outcomes:
        result.posted += outcome["sent"]
        result.unsent += outcome["unsent"]
        last.update(outcome["last"])
        for status, n in outcome["failures"].items():
            result.post_failures[status] = result.post_failures.get(status, 0) + n
        result.post_s = max(result.post_s, round(outcome["s"], 2))
    result.accepted = sum(last.values())
    rtts = sorted(ms for outcome in outcomes for ms in outcome["rtt_ms"])
    if rtts:
        result.call_p50_ms = rtts[len(rtts) // 2]
        result.call_p99_ms = rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)]
    if result.post_s:
        result.achieved_rate = round(result.posted / result.post_s, 1)
    result.dropped_pages = pages["dropped"]
    for job, (slow, received, seen) in zip(jobs, pages["seen"], strict=True):
        expected = last.get(job["id"], 0)
        result.received += received
        if seen != expected:
            result.final_missing += 1
        if slow:
            result.slow_expected += expected
            result.slow_received += received
            result.slow_coalesced_pages += int(seen == expected and received < expected)
        else:
            result.intermediate_missing += max(0, expected - received)
    histogram = Histogram()
    histogram.add(pages["hist"], pages["max_us"])
    result.p50_ms = rounded(histogram.quantile_ms(0.5))
    result.p99_ms = rounded(histogram.quantile_ms(0.99))
    result.max_ms = rounded(histogram.max_ms)
    if result.received:
        result.server_us_per_update = round(result.server_cpu_s * 1e6 / result.accepted, 1)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=10_000.0, help="progress calls/s in all")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections/worker")
    parser.add_argument("--slow", type=int, default=20, help="pages that stop reading")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.pages < 1 or args.rate <= 0 or args.seconds <= 0 or args.workers < 1:
        parser.error("--pages, --rate, --seconds and --workers must be positive")
    if not 0 <= args.slow <= args.pages:
        parser.error("--slow must be between 0 and --pages")
    return args


async def main_async(args: argparse.Namespace) -> CheckoutResult:
    ensure_node_modules()
    with tempfile.TemporaryDirectory() as tmp:
        async with started("tandem", Path(tmp) / "server") as target:
            return await run(target, args, Path(tmp))


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    result = asyncio.run(main_async(args))
    print(result.line(), flush=True)
    if args.out:
        args.out.write_text(json.dumps(asdict(result), indent=2))
    sys.exit(1 if result.lost or result.errors else 0)


if __name__ == "__main__":
    main()
