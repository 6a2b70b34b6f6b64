"""A Redis Cluster primary SIGKILLed under two real nodes, its replica promoted (issue 15)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from client_sdk import Client, Message
from realtime.redis_connection import RedisTarget
from tests.faults.invariants import Watch, watch
from tests.faults.test_redis_faults import Publisher
from tests.support.live import LiveServer, live_server
from tests.support.redis import unique_prefix
from tests.support.redis_cluster import ClusterNode, PrivateRedisCluster, private_redis_cluster

RATE = 40.0  # publications/s on each channel
COUNT = 320  # 8 s of them
KILL_AT_S = 2.5


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[PrivateRedisCluster, str, LiveServer, LiveServer]]:
    with ExitStack() as stack:
        cluster = stack.enter_context(private_redis_cluster(node_timeout_ms=1000))
        url = cluster.broker_url(unique_prefix())
        env = {"TANDEM_BROKER_URL": url}
        a = stack.enter_context(live_server(tmp_path / "a", env))
        b = stack.enter_context(live_server(tmp_path / "b", env))
        yield cluster, url, a, b


def one_channel_per_shard(cluster: PrivateRedisCluster, url: str) -> dict[int, str]:
    """A room channel on each primary, by the primary's port."""
    target, found = RedisTarget.parse(url), dict[int, str]()
    for i in range(100):
        channel = f"room:k{i}"
        found.setdefault(cluster.primary_of(target.key(channel, "m")).port, channel)
    return found


def promoted_after(cluster: PrivateRedisCluster, killed: ClusterNode) -> float:
    """Seconds until a replica has taken over the killed primary's slots (polled)."""
    start = time.monotonic()
    while time.monotonic() - start < 30:
        if all(line.address != killed.address for line in cluster.topology() if line.is_primary):
            if len([line for line in cluster.topology() if line.is_primary and line.slots]) == 3:
                return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("no replica took over within 30 s")


async def test_a_primary_killed_mid_stream_loses_nothing_silently(
    nodes: tuple[PrivateRedisCluster, str, LiveServer, LiveServer],
) -> None:
    """SIGKILL one of three primaries while every channel takes 40 publications/s.

    Channels on the other shards lose nothing and are never resynced. The killed shard's
    channels start a new epoch on the promoted replica (it may lack the last publications its
    primary acknowledged): each subscriber there is told so by a Resync, then gets the new
    stream; an accepted publication it never got must be behind such a Resync. Everything
    accepted after the failover reaches every subscriber. Delivery resumes within 5 s of the
    kill on every channel.
    """
    cluster, url, a, b = nodes
    shards = one_channel_per_shard(cluster, url)
    assert len(shards) == 3
    victim = next(node for node in cluster.nodes if node.port in shards)
    hit = shards[victim.port]
    durable_channel = next(
        f"job:k{i}"
        for i in range(100)
        if cluster.primary_of(RedisTarget.parse(url).key(f"job:k{i}", "m")).port == victim.port
    )
    publishers = [
        Publisher(a if i % 2 else b, channel) for i, channel in enumerate(sorted(shards.values()))
    ]
    publishers.append(Publisher(a, durable_channel, durable=True))
    watches = {(n, p.channel): Watch() for n in "ab" for p in publishers}
    token = a.token("ops", scope="admin")
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
        publishing = asyncio.gather(*(p.run(COUNT, RATE) for p in publishers))
        await asyncio.sleep(KILL_AT_S)
        await asyncio.to_thread(cluster.kill, victim)
        killed = time.monotonic()
        promoted = await asyncio.to_thread(promoted_after, cluster, victim)
        await publishing
        await asyncio.sleep(3)  # the outbox drains, subscribers settle
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    print(f"\nprimary {victim.address} killed; replica promoted {promoted:.2f} s later")
    for publisher in publishers:
        refused = {status for _, status in publisher.refused}
        if publisher.durable:
            assert publisher.refused == [] and publisher.accepted == list(range(COUNT))
        else:
            assert refused <= {503}, f"{publisher.channel}: refused with {refused}"
        for node in "ab":
            sink = watches[(node, publisher.channel)]
            sink.assert_no_silent_gap()
            seen = sink.values()
            where = f"{node}/{publisher.channel}"
            assert seen == sorted(set(seen)), f"{where}: duplicates or disorder"
            assert seen[-1] == publisher.accepted[-1], f"{where}: did not converge"
            missing = sorted(set(publisher.accepted) - set(seen))
            on_victim = publisher.channel in (hit, durable_channel)
            if on_victim:
                assert sink.resyncs, f"{where}: the failover was not announced"
                resynced_at = max(sink.arrivals[sink.items.index(r)] for r in sink.resyncs)
                late = [i for i in missing if publisher.sent_at[i] > resynced_at]
                assert not late, f"{where}: {late} accepted after the resync, never delivered"
            else:
                assert not sink.resyncs, f"{where}: resynced though its shard was not hit"
                assert not missing, f"{where}: {len(missing)} accepted, never delivered"
            after_kill = [
                t
                for t, item in zip(sink.arrivals, sink.items, strict=True)
                if isinstance(item, Message) and publisher.sent_at[item.data["i"]] > killed
            ]
            resumed = min(after_kill) - killed
            print(
                f"{where}{' (killed shard)' if on_victim else ''}: accepted "
                f"{len(publisher.accepted)}, refused {len(publisher.refused)}, delivered "
                f"{len(seen)}, missing {len(missing)}, resyncs {len(sink.resyncs)}, resumed "
                f"{resumed:.2f} s after the kill"
            )
            assert resumed < 5.0, f"{where}: delivery resumed {resumed:.2f} s after the kill"
