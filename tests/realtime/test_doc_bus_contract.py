"""The DocBus contract, run against every implementation: memory (buses sharing an
exchange, as nodes in one process) and Redis (plain and sharded pub/sub)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from realtime.collab.bus import (
    BusKind,
    BusMessage,
    DocBus,
    MemoryDocBus,
    MemoryExchange,
    create_doc_bus,
)
from tests.support.redis import broker_url, redis_prefix, redis_url, unique_prefix
from tests.support.redis_cluster import PrivateRedisCluster
from tests.support.services import private_redis

BUSES = ["memory", "redis", "redis-sharded", "redis-cluster"]


class Heard:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[BusMessage] = asyncio.Queue()
        self.reconnects = 0

    async def __call__(self, message: BusMessage) -> None:
        await self.queue.put(message)

    async def reconnected(self) -> None:
        self.reconnects += 1

    async def take(self, n: int, timeout: float = 3.0) -> list[BusMessage]:
        async with asyncio.timeout(timeout):
            return [await self.queue.get() for _ in range(n)]

    async def nothing_before(self, bus: DocBus, sender: DocBus, sender_id: str) -> None:
        """Subscribe ``bus`` (this one's node) to a sentinel document, have another node send
        on it, and assert that the sentinel is the next message heard. A node hears through
        one subscriber (memory: one exchange; Redis: one pub/sub connection to one server) in
        publish order, so anything unwanted sent before it would have come first."""
        await subscribed(bus, "sentinel")
        async with asyncio.timeout(5):
            while True:  # a Redis bus confirms the subscription a little later
                if await sender.peers("sentinel") >= 1:
                    break
                await asyncio.sleep(0.02)
        await sender.publish(BusMessage(BusKind.UPDATE, "sentinel", sender_id, "e", b"s"))
        (heard,) = await self.take(1)
        assert (heard.doc_id, heard.payload) == ("sentinel", b"s"), f"unexpected: {heard}"


Nodes = Callable[[int], AbstractAsyncContextManager[list[tuple[DocBus, Heard]]]]


@pytest.fixture(params=BUSES)
def nodes(request: pytest.FixtureRequest) -> Nodes:
    kind: str = request.param
    cluster: PrivateRedisCluster | None = None
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")

    @asynccontextmanager
    async def factory(count: int) -> AsyncIterator[list[tuple[DocBus, Heard]]]:
        exchange = MemoryExchange()
        async with AsyncExitStack() as stack:
            url = "memory://"
            if cluster is not None:
                url = cluster.broker_url(unique_prefix())
            elif kind.startswith("redis"):
                prefix = await stack.enter_async_context(redis_prefix())
                url = broker_url(prefix, sharded=kind == "redis-sharded")
            made = []
            for i in range(count):
                heard = Heard()
                bus: DocBus
                if kind == "memory":
                    bus = MemoryDocBus(f"n{i}", heard, exchange)
                else:
                    bus = create_doc_bus(url, f"n{i}", heard, heard.reconnected)
                await stack.enter_async_context(bus)
                made.append((bus, heard))
            yield made

    return factory


def message(node: str, payload: bytes, kind: BusKind = BusKind.UPDATE) -> BusMessage:
    return BusMessage(kind, "doc-1", node, "epoch-1", payload)


async def subscribed(bus: DocBus, doc: str = "doc-1") -> None:
    async with asyncio.timeout(5):
        while True:  # a Redis bus may still be connecting: subscribe is kept and retried
            await bus.subscribe(doc)
            if await bus.peers(doc) >= 0:
                return


async def test_a_message_reaches_every_other_subscribed_node_but_not_its_own(
    nodes: Nodes,
) -> None:
    async with nodes(3) as [(a, heard_a), (b, heard_b), (c, heard_c)]:
        for bus in (a, b):
            await subscribed(bus)
        await wait_peers(a, 1)
        await a.publish(message("n0", b"one"))
        await b.publish(message("n1", b"two"))
        assert [m.payload for m in await heard_b.take(1)] == [b"one"]
        # Not its own: a's "one" was published before b's "two", so it would have come first.
        assert [m.payload for m in await heard_a.take(1)] == [b"two"]
        await heard_c.nothing_before(c, a, "n0")  # not subscribed


async def test_messages_keep_every_field(nodes: Nodes) -> None:
    async with nodes(2) as [(a, _), (b, heard_b)]:
        for bus in (a, b):
            await subscribed(bus)
        await wait_peers(a, 1)
        sent = BusMessage(BusKind.SV_REQUEST, "doc-1", "n0", "e" * 32, bytes(range(256)))
        await a.publish(sent)
        assert await heard_b.take(1) == [sent]


async def test_unsubscribe_stops_delivery_and_peers_counts_the_others(nodes: Nodes) -> None:
    async with nodes(3) as [(a, _), (b, heard_b), (c, heard_c)]:
        for bus in (a, b, c):
            await subscribed(bus)
        await wait_peers(a, 2)
        await b.unsubscribe("doc-1")
        await wait_peers(a, 1)
        await a.publish(message("n0", b"after"))
        assert [m.payload for m in await heard_c.take(1)] == [b"after"]
        await heard_b.nothing_before(b, a, "n0")


async def wait_peers(bus: DocBus, expected: int) -> None:
    async with asyncio.timeout(5):
        while True:
            if await bus.peers("doc-1") == expected:
                return
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("sharded", [False, True])
async def test_redis_drops_malformed_messages_and_keeps_listening(sharded: bool) -> None:
    async with redis_prefix() as prefix:
        url = broker_url(prefix, sharded=sharded)
        heard = Heard()
        async with create_doc_bus(url, "n1", heard, heard.reconnected) as bus:
            await subscribed(bus)
            raw = aioredis.from_url(redis_url())
            try:
                publish = raw.spublish if sharded else raw.publish
                channel = f"{prefix}{{doc:doc-1}}:y"
                for garbage in (b"", b"\xc1", b"\x94\x01\x02\x03\x04", b"\x94\x09a\xa1e\xc4\x00"):
                    await publish(channel, garbage)
                await publish(channel, message("n0", b"fine").encode())
            finally:
                await raw.aclose()
            assert [m.payload for m in await heard.take(1)] == [b"fine"]


async def test_redis_bus_resubscribes_and_reports_a_lost_connection(tmp_path: Path) -> None:
    # A private Redis: its connections may be cut without touching anyone else's.
    with private_redis(tmp_path) as redis:
        await _lose_connection(redis.url)


async def _lose_connection(base: str) -> None:
    async with AsyncExitStack() as stack:
        url = broker_url("tandem-test:", base=base)
        heard_a, heard_b = Heard(), Heard()
        a = await stack.enter_async_context(create_doc_bus(url, "n0", heard_a, heard_a.reconnected))
        b = await stack.enter_async_context(create_doc_bus(url, "n1", heard_b, heard_b.reconnected))
        for bus in (a, b):
            await subscribed(bus)
        await wait_peers(a, 1)
        raw = aioredis.from_url(base)
        try:
            await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        finally:
            await raw.aclose()
        async with asyncio.timeout(10):
            while True:
                if heard_b.reconnects:
                    break
                await asyncio.sleep(0.02)
        await wait_peers(a, 1)
        await a.publish(message("n0", b"after the cut"))
        assert [m.payload for m in await heard_b.take(1)] == [b"after the cut"]
