"""Faults injected into a private Redis under two real nodes: a restart, a stall, a killed
pub/sub connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from client_sdk import Client
from tests.faults.invariants import Watch, watch
from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.services import PrivateRedis, private_redis
from tests.support.sio import connected, sentinel
from tests.support.waiting import eventually


@pytest.fixture
def cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[PrivateRedis, LiveServer, LiveServer]]:
    appendonly = getattr(request, "param", "volatile") == "appendonly"
    with ExitStack() as stack:
        redis = stack.enter_context(private_redis(tmp_path, appendonly=appendonly))
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
        self.sent_at: dict[int, float] = {}  # i -> when it was sent (monotonic)
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
                self.sent_at[i] = time.monotonic()
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
        await eventually(lambda: len(reader.arrivals) >= 40, within=10, what="mid-stream")
        assert int(redis.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await task
        events = await reader.take(len(publisher.accepted), timeout=10)
        # Then a sentinel on the channel: nothing (no duplicate) may come before it.
        async with httpx.AsyncClient(base_url=a.url, timeout=5) as http:
            sent = await http.post(
                "/api/publish",
                json={"channel": "room:k", "event": "test.sentinel", "data": None},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert sent.status_code == 200, sent.text
        await reader.quiet_until(sentinel("test.sentinel"))
        del reader.arrivals[-1]  # the sentinel's
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


@pytest.mark.parametrize("cluster", ["volatile", "appendonly"], indirect=True)
async def test_redis_restart_loses_nothing_silently(
    cluster: tuple[PrivateRedis, LiveServer, LiveServer],
) -> None:
    """SHUTDOWN NOSAVE at 50 publications/s, back after 4 s.

    Durable (outbox) publications are all accepted and published once Redis is back; direct
    ones are refused with 503 while it is down. Every accepted publication reaches every
    subscriber: when Redis comes back empty, a subscriber told its stream is gone (a Resync)
    gets the new stream from its first publication, including what nodes accepted before
    their listener was back (issue 16: 248-298 such publications reached nobody). With Redis
    persisting its data (appendonly), the streams survive and nothing is even resynced.
    """
    redis, a, b = cluster
    token = a.token("ops", scope="admin")
    durable = Publisher(a, "job:f1", durable=True)
    direct = Publisher(b, "room:f1")
    watches = {(n, ch): Watch() for n in "ab" for ch in ("job:f1", "room:f1")}
    async with (
        Client(a.url, token=token, reconnect_delay=0.2, reconnect_delay_max=1) as on_a,
        Client(b.url, token=token, reconnect_delay=0.2, reconnect_delay_max=1) as on_b,
    ):
        tasks = []
        for (node, channel), sink in watches.items():
            ready = asyncio.Event()
            client = on_a if node == "a" else on_b
            tasks.append(asyncio.create_task(watch(client, channel, sink, ready)))
            await asyncio.wait_for(ready.wait(), 5)
        publishing = asyncio.gather(durable.run(400, rate=50), direct.run(400, rate=50))
        await asyncio.sleep(2)
        await asyncio.to_thread(redis.shutdown_nosave)
        await asyncio.sleep(4)
        await asyncio.to_thread(redis.start)
        restarted = time.monotonic()
        await publishing
        # The outbox drains and every subscriber reaches the last accepted publication.
        await eventually(
            lambda: all(
                (durable.accepted if ch == "job:f1" else direct.accepted)[-1:] == sink.values()[-1:]
                for (_, ch), sink in watches.items()
            ),
            within=20,
            what="every subscriber has the last accepted publication",
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert durable.refused == [] and durable.accepted == list(range(400))
    refused = {status for _, status in direct.refused}
    assert direct.refused and refused <= {503}, refused
    mode = "appendonly" if redis.appendonly else "volatile"
    for (node, channel), sink in watches.items():
        sink.assert_no_silent_gap()
        accepted = durable.accepted if channel == "job:f1" else direct.accepted
        seen = sink.values()
        assert seen == sorted(set(seen)), f"{node}/{channel}: duplicates or disorder"
        assert seen[-1] == accepted[-1], f"{node}/{channel}: did not converge"
        missing = sorted(set(accepted) - set(seen))
        assert not missing, f"{node}/{channel}: {len(missing)} accepted, never delivered"
        if redis.appendonly:
            assert not sink.resyncs, f"{node}/{channel}: resynced though the streams survived"
        resumed = sink.first_arrival_after(restarted)
        assert resumed is not None and resumed - restarted < 5.0
        print(
            f"redis restart ({mode}) {node}/{channel}: accepted {len(accepted)}, "
            f"delivered {len(seen)}, resyncs {len(sink.resyncs)}, "
            f"resumed {resumed - restarted:.2f}s after restart"
        )
    print(f"direct publishes refused with 503 during the outage: {len(direct.refused)}")
