"""A node's stats snapshot: counters, rates, and the rings of slow consumers and errors."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from domain.errors import ErrorCode
from realtime.broker import Publication
from server.admin.stats import RING_SIZE, STATS_CHANNEL
from server.assembly import build_runtime
from server.config import Settings


async def test_snapshot_counts_rates_slow_consumers_and_errors(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tandem.db'}",
        admin_stats_interval_s=0.05,
        node_id="n1",
    )
    runtime = build_runtime(settings)
    published: asyncio.Queue[Publication] = asyncio.Queue()
    original = runtime.hub.on_publication

    async def spy(pub: Publication) -> None:
        if pub.channel == STATS_CHANNEL:
            await published.put(pub)
        await original(pub)

    runtime.hub.on_publication = spy  # type: ignore[method-assign]
    async with runtime.broker, runtime.stats:
        await runtime.broker.subscribe(STATS_CHANNEL)
        await runtime.gateway.kick("gone", ErrorCode.SLOW, "fell behind", reconnect=True)
        await runtime.gateway.kick("gone", ErrorCode.SHUTDOWN, "restarting", reconnect=True)
        for _ in range(RING_SIZE + 5):
            await runtime.gateway.requests.unknown_event("bogus", "sid")
        logging.getLogger("tandem.test").error("something broke")
        runtime.metrics.http_publications.inc(10)
        async with asyncio.timeout(5):
            while True:
                snapshot = (await published.get()).data
                if snapshot["publications"] == 10:
                    break
    assert snapshot["node"] == "n1" and snapshot["connections"] == 0
    assert snapshot["slow_total"] == 1
    assert [(s["connection"], s["message"]) for s in snapshot["slow"]] == [("gone", "fell behind")]
    assert snapshot["errors_total"] == RING_SIZE + 5
    assert len(runtime.stats.errors) == RING_SIZE  # bounded
    assert snapshot["errors"][-1] == {
        "ts": snapshot["errors"][-1]["ts"],
        "source": "tandem.test",
        "code": "internal",
        "message": "something broke",
    }
    assert snapshot["errors"][0]["code"] == "invalid_payload"
    assert snapshot["publish_rate"] >= 0
    # Detached on exit: later errors are not recorded.
    logging.getLogger("tandem.test").error("after")
    assert runtime.stats.errors[-1]["message"] == "something broke"
    await runtime.db.dispose()
