"""The outbox on SQLite and PostgreSQL, relaying to a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime.broker import BrokerOptions, BrokerUnavailable, Publication
from realtime.memory import MemoryBroker
from storage.database import Database
from storage.outbox import OutboxMessage, OutboxRelay, stage


class Published:
    def __init__(self) -> None:
        self.items: list[Publication] = []
        self.changed = asyncio.Event()

    async def __call__(self, pub: Publication) -> None:
        self.items.append(pub)
        self.changed.set()


@pytest.fixture
async def broker() -> AsyncIterator[tuple[MemoryBroker, Published]]:
    received = Published()
    async with MemoryBroker(BrokerOptions(), received) as broker:
        await broker.subscribe("job:1")
        await broker.subscribe("job:2")
        yield broker, received


def publisher(broker: MemoryBroker, fail_after: list[int] | None = None) -> Any:
    async def publish(channel: str, event: str, data: Any, key: str) -> None:
        if fail_after is not None:
            if fail_after[0] <= 0:
                raise BrokerUnavailable("down")
            fail_after[0] -= 1
        await broker.publish(channel, event, data, idempotency_key=key)

    return publish


async def write(db: Database, *messages: OutboxMessage, commit: bool = True) -> None:
    async with db.sessions() as session:
        await stage(session, messages)
        if commit:
            await session.commit()
        else:
            await session.rollback()


async def settle(received: Published, count: int) -> None:
    async with asyncio.timeout(3):
        while len(received.items) < count:
            received.changed.clear()
            await received.changed.wait()


async def test_committed_events_go_out_in_order_rolled_back_never(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    memory, received = broker
    await write(db, OutboxMessage("job:1", "job.created", {"v": 0}), commit=False)
    await write(db, *(OutboxMessage("job:1", "job.progress", {"v": i}) for i in range(1, 6)))
    relay = OutboxRelay(db, publisher(memory))
    assert await relay.pending() == 5
    assert await relay.relay_once() == 5
    await settle(received, 5)
    assert [p.data["v"] for p in received.items] == [1, 2, 3, 4, 5]
    assert await relay.pending() == 0 and await relay.relay_once() == 0


async def test_broker_outage_keeps_events_until_it_returns(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    memory, received = broker
    await write(db, *(OutboxMessage("job:2", "job.progress", {"v": i}) for i in range(6)))
    budget = [2]
    relay = OutboxRelay(db, publisher(memory, budget))
    with pytest.raises(BrokerUnavailable):
        await relay.relay_once()
    assert await relay.pending() == 4
    budget[0] = 100  # the broker is back
    assert await relay.relay_once() == 4
    await settle(received, 6)
    assert [p.data["v"] for p in received.items] == list(range(6))
    assert [p.offset for p in received.items] == list(range(1, 7))


async def test_running_relay_publishes_soon_after_a_wake(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    memory, received = broker
    async with OutboxRelay(db, publisher(memory), poll_interval=30) as relay:
        await asyncio.sleep(0.05)
        await write(db, OutboxMessage("job:1", "job.created", {}))
        relay.wake()
        await settle(received, 1)


async def test_polling_picks_up_rows_without_a_wake(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    memory, received = broker
    async with OutboxRelay(db, publisher(memory), poll_interval=0.1):
        await write(db, OutboxMessage("job:1", "job.created", {}))
        await settle(received, 1)


async def test_many_relays_publish_each_row_once_in_order(database_url: str) -> None:
    received = Published()
    dbs = [Database(database_url) for _ in range(3)]
    try:
        async with MemoryBroker(BrokerOptions(), received) as memory:
            await memory.subscribe("job:1")
            await write(
                dbs[0], *(OutboxMessage("job:1", "job.progress", {"v": i}) for i in range(200))
            )
            relays = [OutboxRelay(d, publisher(memory), batch_size=7) for d in dbs]

            async def drain(relay: OutboxRelay) -> None:
                while await relay.pending():
                    await relay.relay_once()
                    await asyncio.sleep(0)

            await asyncio.gather(*(drain(r) for r in relays))
            await settle(received, 200)
    finally:
        for each in dbs:
            await each.dispose()
    assert [p.data["v"] for p in received.items] == list(range(200))


async def test_stopping_lets_a_pass_under_way_finish(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    memory, received = broker
    publish = publisher(memory)
    publishing = asyncio.Event()

    async def slow(channel: str, event: str, data: Any, key: str) -> None:
        publishing.set()
        await asyncio.sleep(0.2)
        await publish(channel, event, data, key)

    await write(db, OutboxMessage("job:1", "job.created", {}))
    relay = OutboxRelay(db, slow, poll_interval=30)
    async with relay:
        await asyncio.wait_for(publishing.wait(), 3)
    # The pass published its row and marked it sent before the relay stopped.
    assert len(received.items) == 1
    assert await relay.pending() == 0


async def test_a_row_the_broker_refuses_is_dead_lettered_and_holds_back_only_its_channel(
    db: Database, broker: tuple[MemoryBroker, Published]
) -> None:
    """Issue 16: a poison row was retried for ever, blocked its channel across restarts and
    slowed every other channel's durable delivery (the whole relay backed off)."""
    memory, received = broker

    async def publish(channel: str, event: str, data: Any, key: str) -> None:
        if data.get("poison"):
            raise ValueError("cannot encode this")
        if data.get("down"):
            raise BrokerUnavailable("down")
        await memory.publish(channel, event, data, idempotency_key=key)

    await write(
        db,
        OutboxMessage("job:1", "job.progress", {"poison": True}),
        OutboxMessage("job:1", "job.progress", {"v": 2}),
        OutboxMessage("job:2", "job.progress", {"v": 3}),
    )
    relay = OutboxRelay(db, publish, transient=(BrokerUnavailable,), max_attempts=3)
    assert await relay.relay_once() == 1  # job:2 goes; job:1 waits behind its refused row
    await settle(received, 1)
    assert [p.data["v"] for p in received.items] == [3]
    assert await relay.relay_once() == 0
    assert await relay.relay_once() == 1  # third refusal: dead-lettered, job:1 goes on
    await settle(received, 2)
    assert [p.data["v"] for p in received.items] == [3, 2]
    stats = await relay.stats()
    assert (stats.pending, stats.dead) == (0, 1)
    # A broker that is down is not the row's fault: nothing is counted against it.
    await write(db, OutboxMessage("job:2", "job.progress", {"down": True}))
    for _ in range(5):
        with pytest.raises(BrokerUnavailable):
            await relay.relay_once()
    stats = await relay.stats()
    assert (stats.pending, stats.dead) == (1, 1) and stats.oldest_s >= 0
