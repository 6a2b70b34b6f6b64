"""The Broker contract, run against every implementation: memory, Redis (plain and sharded
pub/sub) and a Redis Cluster of three primaries and three replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from realtime.broker import (
    Broker,
    BrokerOptions,
    Publication,
    Retention,
    StreamPosition,
    UnrecoverablePosition,
    create_broker,
)
from tests.support.redis import broker_url, redis_prefix, unique_prefix
from tests.support.redis_cluster import PrivateRedisCluster

BROKERS = ["memory", "redis", "redis-sharded", "redis-cluster"]


class Received:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Publication] = asyncio.Queue()

    async def __call__(self, pub: Publication) -> None:
        await self.queue.put(pub)

    async def take(self, n: int, timeout: float = 2.0) -> list[Publication]:
        async with asyncio.timeout(timeout):
            return [await self.queue.get() for _ in range(n)]

    async def nothing_before(self, broker: Broker, channel: str) -> None:
        """Publish a sentinel on ``channel`` (subscribed) and assert that it is the next
        delivery. A node receives through one subscriber (memory: one queue; Redis: one
        pub/sub connection to one server) in publish order, so anything unwanted published
        before it would have come first."""
        await broker.publish(channel, "test.sentinel", None)
        await self.sentinel_next(channel)

    async def sentinel_next(self, channel: str) -> None:
        """Assert that the next delivery is a sentinel published on ``channel``."""
        (pub,) = await self.take(1)
        assert (pub.channel, pub.event) == (channel, "test.sentinel"), f"unexpected: {pub}"


BrokerFactory = Callable[..., AbstractAsyncContextManager[tuple[Broker, Received]]]


@pytest.fixture(params=BROKERS)
def make_broker(request: pytest.FixtureRequest) -> BrokerFactory:
    kind = request.param
    cluster: PrivateRedisCluster | None = None
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")

    @asynccontextmanager
    async def factory(**options: object) -> AsyncIterator[tuple[Broker, Received]]:
        received = Received()
        async with AsyncExitStack() as stack:
            url = "memory://"
            if cluster is not None:
                url = cluster.broker_url(unique_prefix())  # the cluster goes with the session
            elif kind.startswith("redis"):
                prefix = await stack.enter_async_context(redis_prefix())
                url = broker_url(prefix, sharded=kind == "redis-sharded")
            broker = create_broker(url, BrokerOptions(**options), received)  # type: ignore[arg-type]
            await stack.enter_async_context(broker)
            await wait_ready(broker)
            yield broker, received

    return factory


async def wait_ready(broker: Broker) -> None:
    async with asyncio.timeout(5):
        while True:
            try:
                await broker.ping()
                return
            except Exception:
                await asyncio.sleep(0.02)


async def test_publication_reaches_subscribed_node_in_order(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, received):
        await broker.subscribe("room:a")
        results = [await broker.publish("room:a", "chat.message", {"n": i}) for i in range(20)]
        pubs = await received.take(20)
    assert [p.data["n"] for p in pubs] == list(range(20))
    assert [p.offset for p in pubs] == [r.offset for r in results] == list(range(1, 21))
    assert {p.epoch for p in pubs} == {results[0].epoch}
    assert all(p.channel == "room:a" and p.event == "chat.message" for p in pubs)


async def test_unsubscribed_channels_are_not_delivered(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, received):
        await broker.subscribe("room:a")
        await broker.subscribe("room:c")
        await broker.publish("room:b", "x.y", 1)
        await received.nothing_before(broker, "room:a")
        await broker.unsubscribe("room:a")
        await broker.publish("room:a", "x.y", 2)
        await received.nothing_before(broker, "room:c")


async def test_offsets_strictly_increase_under_concurrent_publishers(
    make_broker: BrokerFactory,
) -> None:
    async with make_broker() as (broker, received):
        await broker.subscribe("room:a")
        results = await asyncio.gather(*(broker.publish("room:a", "x.y", i) for i in range(100)))
        pubs = await received.take(100)
    assert sorted(r.offset for r in results) == list(range(1, 101))
    assert [p.offset for p in pubs] == list(range(1, 101))


async def test_channels_have_independent_offsets(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        a = [await broker.publish("room:a", "x.y", i) for i in range(3)]
        b = await broker.publish("room:b", "x.y", 0)
    assert [r.offset for r in a] == [1, 2, 3]
    assert b.offset == 1


async def test_history_since_replays_everything_missed(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        first = await broker.publish("room:a", "x.y", 0)
        for i in range(1, 6):
            await broker.publish("room:a", "x.y", i)
        history = await broker.history("room:a", since=StreamPosition(first.epoch, 2))
    assert [p.offset for p in history.publications] == [3, 4, 5, 6]
    assert history.position == StreamPosition(first.epoch, 6)


async def test_history_since_top_is_empty_and_recovered(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        result = await broker.publish("room:a", "x.y", 0)
        history = await broker.history("room:a", since=StreamPosition(result.epoch, 1))
    assert history.publications == []
    assert history.position.offset == 1


async def test_history_of_a_new_channel_starts_at_zero(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        history = await broker.history("room:new", limit=0)
        later = await broker.publish("room:new", "x.y", 0)
    assert history.publications == [] and history.position.offset == 0
    assert later.epoch == history.position.epoch and later.offset == 1


async def test_history_latest_with_limit(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        for i in range(5):
            await broker.publish("room:a", "x.y", i)
        latest = await broker.history("room:a", limit=2)
        everything = await broker.history("room:a")
    assert [p.data for p in latest.publications] == [3, 4]
    assert [p.data for p in everything.publications] == [0, 1, 2, 3, 4]


async def test_history_is_bounded_by_size_and_never_partial(make_broker: BrokerFactory) -> None:
    async with make_broker(history_size=3) as (broker, _):
        first = await broker.publish("room:a", "x.y", 0)
        for i in range(1, 10):
            await broker.publish("room:a", "x.y", i)
        kept = await broker.history("room:a")
        assert [p.offset for p in kept.publications] == [8, 9, 10]
        with pytest.raises(UnrecoverablePosition):
            await broker.history("room:a", since=StreamPosition(first.epoch, 5))
        recent = await broker.history("room:a", since=StreamPosition(first.epoch, 7))
    assert [p.offset for p in recent.publications] == [8, 9, 10]


async def test_history_expires_by_ttl(make_broker: BrokerFactory) -> None:
    async with make_broker(history_ttl=0.2) as (broker, _):
        first = await broker.publish("room:a", "x.y", 0)
        await asyncio.sleep(0.3)
        second = await broker.publish("room:a", "x.y", 1)
        history = await broker.history("room:a")
        assert [p.offset for p in history.publications] == [second.offset]
        with pytest.raises(UnrecoverablePosition):
            await broker.history("room:a", since=StreamPosition(first.epoch, 0))


def by_namespace(**rules: Retention) -> Callable[[str], Retention | None]:
    """A retention per namespace, as a node's channel namespaces give one."""
    return lambda channel: rules.get(channel.partition(":")[0])


async def test_retention_is_each_channels_own(make_broker: BrokerFactory) -> None:
    retention = by_namespace(chat=Retention(2, 300), brief=Retention(50, 0.2))
    async with make_broker(history_size=4, retention=retention) as (broker, _):
        for i in range(6):
            await broker.publish("chat:a", "x.y", i)
            await broker.publish("room:a", "x.y", i)
        first = await broker.publish("brief:a", "x.y", 0)
        await asyncio.sleep(0.3)
        await broker.publish("brief:a", "x.y", 1)
        chat, room = await broker.history("chat:a"), await broker.history("room:a")
        brief = await broker.history("brief:a")
        assert [p.offset for p in chat.publications] == [5, 6]
        assert [p.offset for p in room.publications] == [3, 4, 5, 6]  # the default
        assert [p.offset for p in brief.publications] == [2]
        with pytest.raises(UnrecoverablePosition):
            await broker.history("chat:a", since=StreamPosition(chat.position.epoch, 3))
        with pytest.raises(UnrecoverablePosition):
            await broker.history("brief:a", since=StreamPosition(first.epoch, 0))
        recent = await broker.history("room:a", since=StreamPosition(room.position.epoch, 3))
    assert [p.offset for p in recent.publications] == [4, 5, 6]


async def test_recovery_off_refuses_every_position_but_keeps_history(
    make_broker: BrokerFactory,
) -> None:
    retention = by_namespace(live=Retention(10, 300, recovery=False))
    async with make_broker(retention=retention) as (broker, received):
        await broker.subscribe("live:a")
        first = await broker.publish("live:a", "x.y", 0)
        await broker.publish("live:a", "x.y", 1)
        assert [p.offset for p in await received.take(2)] == [1, 2]
        for offset in (0, 1, 2):
            with pytest.raises(UnrecoverablePosition, match="recovery is off"):
                await broker.history("live:a", since=StreamPosition(first.epoch, offset))
        kept = await broker.history("live:a")
    assert [p.data for p in kept.publications] == [0, 1]


async def test_foreign_epoch_or_future_offset_is_unrecoverable(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        result = await broker.publish("room:a", "x.y", 0)
        with pytest.raises(UnrecoverablePosition):
            await broker.history("room:a", since=StreamPosition("not-the-epoch", 0))
        with pytest.raises(UnrecoverablePosition):
            await broker.history("room:a", since=StreamPosition(result.epoch, 99))


async def test_recovery_beyond_limit_is_unrecoverable(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, _):
        first = await broker.publish("room:a", "x.y", 0)
        for i in range(10):
            await broker.publish("room:a", "x.y", i)
        with pytest.raises(UnrecoverablePosition):
            await broker.history("room:a", since=StreamPosition(first.epoch, 1), limit=5)


async def test_idempotent_publish_returns_original_offset(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, received):
        await broker.subscribe("room:a")
        first = await broker.publish("room:a", "x.y", 1, idempotency_key="k1")
        again = await broker.publish("room:a", "x.y", 1, idempotency_key="k1")
        other = await broker.publish("room:a", "x.y", 2, idempotency_key="k2")
        pubs = await received.take(2)
        await received.nothing_before(broker, "room:a")
    assert (again.offset, again.epoch, again.duplicate) == (first.offset, first.epoch, True)
    assert not first.duplicate and other.offset == first.offset + 1
    assert [p.data for p in pubs] == [1, 2]


async def test_idempotency_keys_are_per_channel_and_expire(make_broker: BrokerFactory) -> None:
    async with make_broker(idempotency_ttl=0.2) as (broker, _):
        a = await broker.publish("room:a", "x.y", 1, idempotency_key="k")
        b = await broker.publish("room:b", "x.y", 1, idempotency_key="k")
        assert not b.duplicate
        await asyncio.sleep(0.3)
        again = await broker.publish("room:a", "x.y", 1, idempotency_key="k")
    assert not again.duplicate and again.offset == a.offset + 1


async def test_envelope_is_the_wire_shape(make_broker: BrokerFactory) -> None:
    async with make_broker() as (broker, received):
        await broker.subscribe("job:1")
        await broker.publish("job:1", "job.progress", {"progress": 40})
        (pub,) = await received.take(1)
    envelope = pub.envelope()
    assert set(envelope) == {"channel", "type", "offset", "epoch", "ts", "data"}
    assert envelope["type"] == "job.progress" and envelope["data"] == {"progress": 40}


async def test_a_failing_handler_does_not_stop_delivery() -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def flaky(pub: Publication) -> None:
        if pub.offset == 1:
            raise RuntimeError("boom")
        seen.append(pub.offset)
        if len(seen) == 2:
            done.set()

    async with create_broker("memory://", BrokerOptions(), flaky) as broker:
        await broker.subscribe("room:a")
        for i in range(3):
            await broker.publish("room:a", "x.y", i)
        async with asyncio.timeout(2):
            await done.wait()
    assert seen == [2, 3]


async def test_using_a_broker_outside_its_context_says_how_to_fix() -> None:
    broker = create_broker("memory://", BrokerOptions(), Received())
    with pytest.raises(RuntimeError, match="async with"):
        await broker.publish("room:a", "x.y", 1)


def test_unknown_broker_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="memory://"):
        create_broker("kafka://x", BrokerOptions(), Received())
