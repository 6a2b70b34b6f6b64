"""One worker process of the checkout benchmark (bench/checkout.py): posts its jobs' progress.

Usage: python -m bench.checkout_worker SPEC_JSON_FILE  (one JSON line of results on stdout)

Each job gets ``steps`` updates, one after the other (a job's progress never goes back, so a
worker waits for one answer before the next), paced so that this worker's jobs together post
``rate`` calls per second. There is no batch endpoint for job progress (``POST
/api/jobs/{id}/progress`` takes one job; ``/api/publish/batch`` publishes, it does not change a
job), so every update is its own HTTP call. An update's ``message`` carries its send time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp


async def post_all(spec: dict[str, Any]) -> dict[str, Any]:
    jobs: list[str] = spec["jobs"]
    steps: int = spec["steps"]
    rate: float = spec["rate"]
    # Calls not sent by then are counted, not made: bounds a server that falls far behind.
    deadline = time.monotonic() + spec["budget_s"]
    last: dict[str, int] = {}
    failures: dict[str, int] = {}
    sent = unsent = 0
    rtts: list[float] = []  # ms from sending a call to its answer: the worker's side of latency
    headers = {"Authorization": f"Bearer {spec['api_key']}"}
    # aiohttp: httpx's own CPU cost caps a Python load generator far lower (bench/jobs.py).
    connector = aiohttp.TCPConnector(limit=spec["connections"])
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        start = time.monotonic()

        async def job_worker(index: int, job_id: str) -> None:
            nonlocal sent, unsent
            for step in range(1, steps + 1):
                slot = start + ((step - 1) * len(jobs) + index) / rate
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                if time.monotonic() > deadline:
                    unsent += steps - step + 1
                    return
                body = {
                    "progress": 100 * step // steps,
                    "stage": f"s{step}",
                    "message": f"t={time.time() * 1000:.3f}",
                }
                sent += 1
                began = time.monotonic()
                try:
                    async with http.post(
                        f"{spec['url']}/api/jobs/{job_id}/progress", json=body
                    ) as response:
                        await response.read()
                        status = str(response.status)
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                rtts.append(round((time.monotonic() - began) * 1000, 1))
                if status == "200":
                    last[job_id] = step
                else:
                    failures[status] = failures.get(status, 0) + 1

        await asyncio.gather(*(job_worker(i, job) for i, job in enumerate(jobs)))
        elapsed = time.monotonic() - start
    return {
        "sent": sent, "unsent": unsent, "failures": failures, "last": last, "s": elapsed,
        "rtt_ms": rtts,
    }  # fmt: skip


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(post_all(spec))), flush=True)


if __name__ == "__main__":
    main()
