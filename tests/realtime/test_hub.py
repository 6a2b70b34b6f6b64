from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from realtime.broker import BrokerOptions, Publication, StreamPosition
from realtime.hub import MAX_JOIN_BUFFER, Hub, JoinOverflow
from realtime.memory import MemoryBroker

START = StreamPosition("", 0)


def broker_epoch(hub: Hub) -> str:
    return next(iter(hub.broker._streams.values())).epoch  # type: ignore[attr-defined]


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
        buffered, position = hub.commit("c1", "room:a", StreamPosition(broker_epoch(hub), 0))
        assert [p.offset for p in buffered] == [1] and position.offset == 1
        await broker.publish("room:a", "x.y", 2)
        await settle()
    assert sink.delivered == [(2, frozenset({"c1"}))]


async def test_first_subscriber_subscribes_node_and_last_leaves_it() -> None:
    hub = Hub(Sink())
    async with MemoryBroker(BrokerOptions(), hub.on_publication) as broker:
        hub.use(broker)
        await hub.begin("c1", "room:a")
        hub.commit("c1", "room:a", START)
        await hub.begin("c2", "room:a")
        hub.commit("c2", "room:a", START)
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
            hub.commit("c1", "room:a", START)


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
        buffered, _ = hub.commit("c1", "room:a", history.position)
        await task
        await settle()
    got = [p.offset for p in history.publications]
    got += [p.offset for p in buffered]
    got += [offset for offset, _ in sink.delivered]
    assert got == list(range(1, 201))


async def test_a_publication_in_the_history_read_is_not_delivered_live_again() -> None:
    """The history a join reads can be ahead of what this node has delivered (the publication
    is in the stream, its live copy still on the way): the live copy must not follow the ack
    (issue 16: offset 51 in a recovered ack, then again live 1.3 ms later)."""
    sink = Sink()
    hub = Hub(sink)
    async with MemoryBroker(BrokerOptions(), hub.on_publication) as broker:
        hub.use(broker)
        await broker.publish("room:a", "x.y", 0)  # the node is subscribed (an earlier member)
        await hub.begin("c0", "room:a")
        hub.commit("c0", "room:a", (await broker.history("room:a", limit=0)).position)
        await settle()
        sink.delivered.clear()
        await broker.publish("room:a", "x.y", 1)  # in the stream; its delivery still queued
        await hub.begin("c1", "room:a")
        history = await broker.history("room:a", limit=0)  # the ack says: up to offset 2
        buffered, position = hub.commit("c1", "room:a", history.position)
        assert buffered == [] and position.offset == 2
        await broker.publish("room:a", "x.y", 2)
        await settle()
    assert sink.delivered == [(2, frozenset({"c0"})), (3, frozenset({"c0", "c1"}))]
