"""Faults injected into a private Redis under two real nodes (notes F1, F6, F7)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.services import PrivateRedis, private_redis
from tests.support.sio import connected


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[PrivateRedis, LiveServer, LiveServer]]:
    with ExitStack() as stack:
        redis = stack.enter_context(private_redis(tmp_path))
        env = {"TANDEM_BROKER_URL": redis.url}
        a = stack.enter_context(live_server(tmp_path / "a", env))
        b = stack.enter_context(live_server(tmp_path / "b", env))
        yield redis, a, b


class Publisher:
    """Publishes at a steady rate through the HTTP API and records every answer."""

    def __init__(self, node: LiveServer, channel: str, *, durable: bool = False) -> None:
        self.node = node
        self.channel = channel
        self.durable = durable
        self.accepted: list[int] = []  # i of publications answered 2xx
        self.refused: list[tuple[int, int]] = []  # (i, status)

    async def run(self, count: int, rate: float) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=self.node.url, headers=headers, timeout=5) as http:
            start = time.monotonic()
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                body = {
                    "channel": self.channel,
                    "event": "chat.message",
                    "data": {"i": i},
                    "durable": self.durable,
                }
                try:
                    response = await http.post("/api/publish", json=body)
                except httpx.HTTPError:
                    self.refused.append((i, 0))
                    continue
                if response.is_success:
                    self.accepted.append(i)
                else:
                    self.refused.append((i, response.status_code))


async def test_killed_pubsub_connection_is_resubscribed_and_the_gap_repaired(
    cluster: tuple[PrivateRedis, LiveServer, LiveServer],
) -> None:
    redis, a, b = cluster
    async with connected(b.url, b.token("alice", channels=["room:k"])) as reader:
        assert (await reader.call("subscribe", {"channel": "room:k"}))["ok"]
        publisher = Publisher(a, "room:k")
        task = asyncio.create_task(publisher.run(150, rate=50))
        await asyncio.sleep(1.0)
        assert int(redis.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await task
        events = await reader.take(len(publisher.accepted), timeout=10)
        await reader.quiet(0.3)
    assert publisher.refused == []
    got = [envelope["data"]["i"] for _, envelope in events]
    assert got == publisher.accepted == list(range(150))
    offsets = [envelope["offset"] for _, envelope in events]
    assert offsets == sorted(set(offsets))
    # Delivery resumed within the capped reconnect backoff (publications come every 20 ms).
    stall = max(
        later - earlier
        for earlier, later in zip(reader.arrivals, reader.arrivals[1:], strict=False)
    )
    assert stall < 2.0, f"delivery stalled {stall:.2f}s after the pub/sub connection was killed"
    print(f"pubsub kill: longest delivery stall {stall * 1000:.0f} ms")
