from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from realtime.broker import BrokerOptions, Publication
from realtime.hub import MAX_JOIN_BUFFER, Hub, JoinOverflow
from realtime.memory import MemoryBroker


class Sink:
    def __init__(self) -> None:
        self.delivered: list[tuple[int, frozenset[str]]] = []

    async def __call__(self, pub: Publication, recipients: Collection[str]) -> None:
        self.delivered.append((pub.offset, frozenset(recipients)))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_join_buffers_until_commit_then_goes_live() -> None:
    sink = Sink()
    hub = Hub(sink)
    async with MemoryBroker(BrokerOptions(), hub.on_publication) as broker:
        hub.use(broker)
        await hub.begin("c1", "room:a")
        await broker.publish("room:a", "x.y", 1)
        await settle()
        assert sink.delivered == []
        buffered = hub.commit("c1", "room:a")
        assert [p.offset for p in buffered] == [1]
        await broker.publish("room:a", "x.y", 2)
        await settle()
    assert sink.delivered == [(2, frozenset({"c1"}))]


async def test_first_subscriber_subscribes_node_and_last_leaves_it() -> None:
    hub = Hub(Sink())
    async with MemoryBroker(BrokerOptions(), hub.on_publication) as broker:
        hub.use(broker)
        await hub.begin("c1", "room:a")
        hub.commit("c1", "room:a")
        await hub.begin("c2", "room:a")
        hub.commit("c2", "room:a")
        assert hub.connection_count("room:a") == 2
        await hub.leave("c1", "room:a")
        assert "room:a" in broker._subscribed
        await hub.leave_all("c2")
        assert "room:a" not in broker._subscribed
        assert hub.channel_count == 0 and hub.channels_of("c2") == frozenset()


async def test_join_that_overflows_is_reported() -> None:
    hub = Hub(Sink())
    async with MemoryBroker(BrokerOptions(history_size=1), hub.on_publication) as broker:
        hub.use(broker)
        await hub.begin("c1", "room:a")
        pub = Publication("room:a", "x.y", None, 1, "e", 0.0)
        for _ in range(MAX_JOIN_BUFFER + 1):
            await hub.on_publication(pub)
        with pytest.raises(JoinOverflow):
            hub.commit("c1", "room:a")


async def test_race_free_subscribe_under_concurrent_publishing() -> None:
    """Replay + buffer + live delivery covers every offset exactly once."""
    sink = Sink()
    hub = Hub(sink)
    async with MemoryBroker(BrokerOptions(), hub.on_publication) as broker:
        hub.use(broker)

        async def publisher() -> None:
            for i in range(200):
                await broker.publish("room:a", "x.y", i)
                if i % 7 == 0:
                    await asyncio.sleep(0)

        task = asyncio.create_task(publisher())
        await asyncio.sleep(0)
        await hub.begin("c1", "room:a")
        history = await broker.history("room:a")
        await asyncio.sleep(0)
        buffered = hub.commit("c1", "room:a")
        await task
        await settle()
    got = [p.offset for p in history.publications]
    top = history.position.offset
    got += [p.offset for p in buffered if p.offset > top]
    got += [offset for offset, _ in sink.delivered]
    assert got == list(range(1, 201))
