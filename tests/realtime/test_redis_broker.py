"""What only the Redis broker has to get right: lost messages, garbage, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
from redis import asyncio as aioredis

from realtime.broker import BrokerOptions, BrokerUnavailable, Publication, Retention
from realtime.redis import RedisBroker
from tests.support.redis import broker_url, redis_prefix, redis_url
from tests.support.services import private_redis


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Publication] = asyncio.Queue()
        self.resets: list[str] = []

    async def __call__(self, pub: Publication) -> None:
        await self.queue.put(pub)

    async def on_reset(self, channel: str) -> None:
        self.resets.append(channel)

    async def take(self, n: int) -> list[Publication]:
        async with asyncio.timeout(5):
            return [await self.queue.get() for _ in range(n)]


async def ready(broker: RedisBroker) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await broker.ping()
                return
            except BrokerUnavailable:
                await asyncio.sleep(0.05)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix() as value:
        yield value


@pytest.mark.parametrize("recovery", [True, False])
async def test_a_lost_pubsub_message_is_repaired_from_the_stream(
    prefix: str, recovery: bool
) -> None:
    """Also where subscribers may not recover: the node's own delivery is repaired."""
    inbox = Inbox()
    options = BrokerOptions(retention=lambda channel: Retention(10, 300, recovery))
    async with RedisBroker(broker_url(prefix), options, inbox) as broker:
        await ready(broker)
        await broker.subscribe("room:gap")
        await broker.publish("room:gap", "x.y", 1)
        # Append offset 2 to the stream the way the script does, but never PUBLISH it:
        # exactly what a pub/sub message dropped on the way looks like.
        raw = aioredis.from_url(redis_url())
        try:
            meta, stream = f"{prefix}{{room:gap}}:m", f"{prefix}{{room:gap}}:s"
            top = await raw.hincrby(meta, "top", 1)
            payload = msgpack.packb(["x.y", 2, time.time(), "other-node"])
            await raw.xadd(stream, {"p": payload}, id=f"{top}-0")
        finally:
            await raw.aclose()
        await broker.publish("room:gap", "x.y", 3)
        pubs = await inbox.take(3)
        # The repair read offset 3 from the stream too: it is not delivered a second time.
        await broker.publish("room:gap", "x.y", 4)
        pubs += await inbox.take(1)
    assert [p.offset for p in pubs] == [1, 2, 3, 4]
    assert [p.data for p in pubs] == [1, 2, 3, 4]


async def test_garbage_on_the_channel_is_dropped_and_listening_goes_on(prefix: str) -> None:
    inbox = Inbox()
    async with RedisBroker(broker_url(prefix), BrokerOptions(), inbox) as broker:
        await ready(broker)
        await broker.subscribe("room:junk")
        raw = aioredis.from_url(redis_url())
        try:
            for junk in (b"not msgpack \xff", msgpack.packb({"a": 1}), msgpack.packb([1])):
                await raw.publish(f"{prefix}{{room:junk}}:p", junk)
        finally:
            await raw.aclose()
        await broker.publish("room:junk", "x.y", "fine")
        (pub,) = await inbox.take(1)
    assert pub.data == "fine" and pub.offset == 1


async def test_outage_makes_the_broker_unavailable_then_it_recovers(tmp_path: Path) -> None:
    inbox = Inbox()
    with private_redis(tmp_path) as redis:
        async with RedisBroker(
            redis.url, BrokerOptions(), inbox, on_reset=inbox.on_reset
        ) as broker:
            await ready(broker)
            await broker.subscribe("room:o")
            first = await broker.publish("room:o", "x.y", 1)
            await asyncio.to_thread(redis.shutdown_nosave)
            with pytest.raises(BrokerUnavailable):
                await broker.publish("room:o", "x.y", 2)
            with pytest.raises(BrokerUnavailable):
                await broker.ping()
            with pytest.raises(BrokerUnavailable):
                await broker.subscribe("room:other")
            await asyncio.to_thread(redis.start)
            await ready(broker)
            after = await broker.publish("room:o", "x.y", 3)
            pubs = await inbox.take(2)
    # Redis lost everything: a new epoch, and the subscribers of room:o are told to resync.
    assert after.epoch != first.epoch and after.offset == 1
    assert inbox.resets == ["room:o"]
    assert [(p.epoch, p.data) for p in pubs] == [(first.epoch, 1), (after.epoch, 3)]


async def test_a_burst_of_subscribes_waits_for_connections_instead_of_failing(
    prefix: str,
) -> None:
    """500 pages subscribing at once: more than the pool has connections."""
    async with RedisBroker(broker_url(prefix), BrokerOptions(), Inbox()) as broker:
        await ready(broker)
        results = await asyncio.gather(
            *(broker.subscribe(f"job:{i}") for i in range(500)), return_exceptions=True
        )
    assert [r for r in results if r is not None] == []


async def test_concurrent_publishes_share_pipelines_in_call_order(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox()
    async with RedisBroker(broker_url(prefix), BrokerOptions(), inbox) as broker:
        await ready(broker)
        await broker.subscribe("room:burst")
        batches: list[int] = []
        evalsha_all = broker._evalsha_all

        async def counted(redis: aioredis.Redis, script: object, calls: list) -> list:
            batches.append(len(calls))
            return await evalsha_all(redis, script, calls)

        monkeypatch.setattr(broker, "_evalsha_all", counted)
        results = await asyncio.gather(
            *(broker.publish("room:burst", "x.y", i) for i in range(300))
        )
        pubs = await inbox.take(300)
    assert [r.offset for r in results] == list(range(1, 301))
    assert [p.data for p in pubs] == list(range(300))
    assert sum(batches) == 300 and len(batches) <= 6, batches


async def test_publishes_reload_the_script_when_redis_lost_it(tmp_path: Path) -> None:
    with private_redis(tmp_path) as redis:
        async with RedisBroker(redis.url, BrokerOptions(), Inbox()) as broker:
            await ready(broker)
            assert (await broker.publish("room:s", "x.y", 0)).offset == 1
            raw = aioredis.from_url(redis.url)
            try:
                await raw.script_flush()
            finally:
                await raw.aclose()
            results = await asyncio.gather(*(broker.publish("room:s", "x.y", i) for i in range(20)))
    assert [r.offset for r in results] == list(range(2, 22))
