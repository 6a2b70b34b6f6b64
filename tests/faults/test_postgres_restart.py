"""PostgreSQL restarts under writes: 503 or success, never 500; the pool recovers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.live import API_KEY, live_server, server_env
from tests.support.services import private_postgres
from tests.support.sio import connected


async def test_writes_during_a_postgres_restart(tmp_path: Path) -> None:
    with private_postgres() as postgres:
        env = {"TANDEM_DATABASE_URL": postgres.url}
        migrate = [sys.executable, "-m", "server", "migrate"]
        await asyncio.to_thread(
            subprocess.run, migrate, env=server_env(tmp_path, env), check=True, timeout=60
        )
        with live_server(tmp_path, env) as node:
            statuses: list[tuple[float, int, str | None]] = []
            accepted: list[int] = []
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with (
                connected(node.url, node.token("ops", scope="admin")) as watcher,
                httpx.AsyncClient(base_url=node.url, headers=headers, timeout=10) as http,
            ):
                await watcher.call("subscribe", {"channel": "job:pg"})

                async def write() -> None:
                    for i in range(160):
                        body = {"channel": "job:pg", "event": "job.progress", "data": {"i": i}}
                        response = await http.post("/api/publish", json={**body, "durable": True})
                        statuses.append(
                            (
                                time.monotonic(),
                                response.status_code,
                                response.headers.get("retry-after"),
                            )
                        )
                        if response.status_code == 202:
                            accepted.append(i)
                        await asyncio.sleep(0.05)

                writer = asyncio.create_task(write())
                await asyncio.sleep(1.5)
                await asyncio.to_thread(postgres.stop)
                await asyncio.sleep(0.5)
                ready = await http.get("/health/ready")
                await asyncio.sleep(1.5)
                await asyncio.to_thread(postgres.start)
                back = time.monotonic()
                await writer
                events = await watcher.take(len(accepted), timeout=10)

    codes = {status for _, status, _ in statuses}
    assert codes <= {202, 503}, f"unexpected statuses: {codes}"
    refused = [(t, retry) for t, status, retry in statuses if status == 503]
    assert refused, "the outage was not noticed"
    assert all(retry for _, retry in refused), "503 without Retry-After"
    assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
    recovered_at = min(t for t, status, _ in statuses if status == 202 and t > back)
    assert recovered_at - back < 5.0
    assert [envelope["data"]["i"] for _, envelope in events] == accepted
    print(
        f"postgres restart: {len(accepted)} accepted, {len(refused)} refused with 503, "
        f"first success {recovered_at - back:.2f}s after postgres was back"
    )
