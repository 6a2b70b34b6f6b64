"""Tandem on a Redis Cluster of three primaries and three replicas (the contract suites run
there too): slots and shards, nodes hearing what they subscribe to on every shard, bursts,
lost scripts and messages, a failover, and URLs that cannot work refused at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
import pytest
from redis.asyncio.cluster import RedisCluster

from realtime.broker import BrokerOptions, Publication, StreamPosition, UnrecoverablePosition
from realtime.redis import RedisBroker
from realtime.redis_connection import RedisConfigError, RedisTarget
from tests.realtime.test_redis_broker import Inbox, ready
from tests.support.live import server_env
from tests.support.redis import broker_url, redis_url, unique_prefix
from tests.support.redis_cluster import PrivateRedisCluster, private_redis_cluster

CHANNELS = [f"room:c{i}" for i in range(12)]


@asynccontextmanager
async def node(
    url: str, inbox: Inbox | None = None, name: str = "n1"
) -> AsyncIterator[RedisBroker]:
    inbox = inbox or Inbox()
    broker = RedisBroker(url, BrokerOptions(node_id=name), inbox, on_reset=inbox.on_reset)
    async with broker:
        await ready(broker)
        yield broker


@asynccontextmanager
async def raw(cluster: PrivateRedisCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url)
    try:
        yield client
    finally:
        await client.aclose()


def by_channel(pubs: list[Publication]) -> dict[str, list[object]]:
    seen: dict[str, list[object]] = {}
    for pub in pubs:
        seen.setdefault(pub.channel, []).append(pub.data)
    return seen


async def test_a_channels_keys_share_one_slot_and_channels_spread_over_every_shard(
    redis_cluster: PrivateRedisCluster,
) -> None:
    prefix = unique_prefix()
    async with node(redis_cluster.broker_url(prefix)) as broker:
        for channel in CHANNELS:
            await broker.publish(channel, "x.y", 1, idempotency_key="k1")
    target = RedisTarget.parse(redis_cluster.broker_url(prefix))
    shards = set()
    for channel in CHANNELS:
        keys = [target.key(channel, suffix) for suffix in ("s", "m", "p", "i:k1")]
        owners = {redis_cluster.primary_of(key).address for key in keys}
        assert len(owners) == 1, f"{channel}: keys on {owners}"
        shards |= owners
    assert len(shards) == 3, f"12 channels on {len(shards)} of 3 primaries"


async def test_every_node_hears_what_it_subscribes_to_on_every_shard(
    redis_cluster: PrivateRedisCluster,
) -> None:
    url = redis_cluster.broker_url(unique_prefix())
    heard_a, heard_b = Inbox(), Inbox()
    wanted_a, wanted_b = set(CHANNELS[:8]), set(CHANNELS[4:])  # overlapping, all shards
    async with node(url, heard_a, "a") as a, node(url, heard_b, "b") as b:
        for channel in wanted_a:
            await a.subscribe(channel)
        for channel in wanted_b:
            await b.subscribe(channel)
        for i in range(5):
            for channel in CHANNELS:
                await (a if i % 2 else b).publish(channel, "x.y", i)
        got_a = await heard_a.take(5 * len(wanted_a))
        got_b = await heard_b.take(5 * len(wanted_b))
        await asyncio.sleep(0.2)
        assert heard_a.queue.empty() and heard_b.queue.empty()
    assert by_channel(got_a) == {channel: list(range(5)) for channel in sorted(wanted_a)}
    assert by_channel(got_b) == {channel: list(range(5)) for channel in sorted(wanted_b)}
    assert all(pub.offset == pub.data + 1 for pub in got_a + got_b)


async def test_a_burst_of_subscribes_waits_for_connections_instead_of_failing(
    redis_cluster: PrivateRedisCluster,
) -> None:
    """500 pages subscribing at once: more than the client may open to one primary."""
    async with node(redis_cluster.broker_url(unique_prefix())) as broker:
        results = await asyncio.gather(
            *(broker.subscribe(f"job:{i}") for i in range(500)), return_exceptions=True
        )
    assert [r for r in results if r is not None] == []


async def test_concurrent_publishes_keep_call_order_on_every_channel(
    redis_cluster: PrivateRedisCluster,
) -> None:
    inbox = Inbox()
    async with node(redis_cluster.broker_url(unique_prefix()), inbox) as broker:
        for channel in CHANNELS[:6]:
            await broker.subscribe(channel)
        results = await asyncio.gather(
            *(broker.publish(CHANNELS[i % 6], "x.y", i) for i in range(300))
        )
        pubs = await inbox.take(300)
    for k, channel in enumerate(CHANNELS[:6]):
        sent = list(range(k, 300, 6))
        assert [r.offset for r in results[k::6]] == list(range(1, 51))
        assert [p.data for p in pubs if p.channel == channel] == sent


async def test_publishes_reload_the_scripts_every_primary_lost(
    redis_cluster: PrivateRedisCluster,
) -> None:
    async with node(redis_cluster.broker_url(unique_prefix())) as broker:
        assert (await broker.publish("room:s", "x.y", 0)).offset == 1
        for cluster_node in redis_cluster.nodes:
            if cluster_node.alive:
                cluster_node.cli("SCRIPT", "FLUSH")
        results = await asyncio.gather(*(broker.publish("room:s", "x.y", i) for i in range(20)))
        history = await broker.history("room:s", limit=0)
    assert [r.offset for r in results] == list(range(2, 22))
    assert history.position.offset == 21


async def test_a_lost_pubsub_message_is_repaired_from_the_stream(
    redis_cluster: PrivateRedisCluster,
) -> None:
    prefix = unique_prefix()
    inbox = Inbox()
    async with node(redis_cluster.broker_url(prefix), inbox) as broker:
        await broker.subscribe("room:gap")
        await broker.publish("room:gap", "x.y", 1)
        async with raw(redis_cluster) as client:  # offset 2 appended, never published
            meta, stream = f"{prefix}{{room:gap}}:m", f"{prefix}{{room:gap}}:s"
            top = await client.hincrby(meta, "top", 1)
            payload = msgpack.packb(["x.y", 2, time.time(), "other-node"])
            await client.xadd(stream, {"p": payload}, id=f"{top}-0")
        await broker.publish("room:gap", "x.y", 3)
        pubs = await inbox.take(3)
        # The repair read offset 3 from the stream too: it is not delivered a second time.
        await broker.publish("room:gap", "x.y", 4)
        pubs += await inbox.take(1)
    assert [(p.offset, p.data) for p in pubs] == [(1, 1), (2, 2), (3, 3), (4, 4)]


async def test_urls_that_cannot_work_are_refused_at_start(
    redis_cluster: PrivateRedisCluster,
) -> None:
    prefix = unique_prefix()
    plain = broker_url(prefix, base=redis_cluster.url)  # a cluster node, without cluster=1
    with pytest.raises(RedisConfigError, match="add cluster=1"):
        async with node(plain):
            pass
    with pytest.raises(RedisConfigError, match="not a Redis Cluster node"):
        async with node(broker_url(prefix) + "&cluster=1"):
            pass
    with pytest.raises(RedisConfigError, match="braces"):
        RedisTarget.parse(f"{redis_cluster.url}?prefix=a{{b}}:&cluster=1")
    with pytest.raises(RedisConfigError, match="database 0"):
        RedisTarget.parse(f"{redis_url().rsplit('/', 1)[0]}/2?cluster=1")


def test_tandem_serve_stops_with_one_line_saying_what_to_change(
    redis_cluster: PrivateRedisCluster, tmp_path: Path
) -> None:
    env = server_env(tmp_path, {"TANDEM_BROKER_URL": broker_url("x:", base=redis_cluster.url)})
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is a Redis Cluster node: add cluster=1 to the URL")
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def failover_cluster() -> Iterator[PrivateRedisCluster]:
    """A cluster of its own: the test below swaps a primary and its replica."""
    with private_redis_cluster() as cluster:
        yield cluster


async def test_a_failover_starts_a_new_epoch_on_the_shard_it_moved(
    failover_cluster: PrivateRedisCluster,
) -> None:
    """A replica promoted may lack what its primary acknowledged last, and would hand out
    those offsets again: its channels start new epochs and their subscribers are told (a
    reset), while channels on other shards go on as they were."""
    cluster = failover_cluster
    prefix = unique_prefix()
    url = cluster.broker_url(prefix)
    target = RedisTarget.parse(url)
    moved = CHANNELS[0]
    primary = cluster.primary_of(target.key(moved, "m"))
    stayed = next(
        c for c in CHANNELS if cluster.primary_of(target.key(c, "m")).port != primary.port
    )
    inbox = Inbox()
    async with node(url, inbox) as broker:
        for channel in (moved, stayed):
            await broker.subscribe(channel)
        before = {c: await broker.publish(c, "x.y", "before") for c in (moved, stayed)}
        await inbox.take(2)
        replica = next(
            n
            for n in cluster.nodes
            if n.alive and f"master_port:{primary.port}" in n.cli("INFO", "replication")
        )
        assert replica.cli("CLUSTER", "FAILOVER") == "OK"
        await asyncio.to_thread(cluster.wait_primary, target.key(moved, "m"), replica, 20)
        await asyncio.to_thread(cluster.wait_healthy, 20)
        after = {}
        async with asyncio.timeout(10):
            for channel in (moved, stayed):
                while channel not in after:
                    try:
                        after[channel] = await broker.publish(channel, "x.y", "after")
                    except Exception:
                        await asyncio.sleep(0.1)
        (pub,) = await inbox.take(1)
        for _ in range(100):  # up to 5 s
            if moved in inbox.resets:
                break
            await asyncio.sleep(0.05)
        # The reset is told when the node reconnects or at the moved channel's first new
        # publication, whichever comes first: after the former, that publication follows it.
        await asyncio.sleep(0.2)
        pubs = [pub, *(inbox.queue.get_nowait() for _ in range(inbox.queue.qsize()))]
        with pytest.raises(UnrecoverablePosition):
            await broker.history(moved, since=StreamPosition(before[moved].epoch, 1))
        kept = await broker.history(stayed, since=StreamPosition(before[stayed].epoch, 1))
    assert after[moved].epoch != before[moved].epoch and after[moved].offset == 1
    assert after[stayed].epoch == before[stayed].epoch and after[stayed].offset == 2
    assert inbox.resets == [moved]
    heard = {(p.channel, p.epoch, p.offset) for p in pubs}
    assert (stayed, before[stayed].epoch, 2) in heard
    assert heard <= {(stayed, before[stayed].epoch, 2), (moved, after[moved].epoch, 1)}
    assert [p.data for p in kept.publications] == ["after"]
