"""The PresenceTracker on real brokers and stores: events, heartbeats, sweeps, several nodes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from realtime.broker import Broker
from realtime.presence import PresenceEntry, PresenceStore, PresenceUnavailable
from realtime.presence_tracker import PresenceTracker
from tests.realtime.presence_nodes import node_backends
from tests.realtime.test_broker_contract import Received


class Node:
    def __init__(
        self, tracker: PresenceTracker, store: PresenceStore, received: Received, broker: Broker
    ):
        self.tracker = tracker
        self.store = store
        self.received = received
        self.broker = broker

    async def nothing_before_sentinel(self) -> None:
        """A sentinel on the channel comes next: nothing was published before it."""
        await self.received.nothing_before(self.broker, "room:a")

    async def events(self, n: int) -> list[tuple[str, object]]:
        return [(p.event, p.data) for p in await self.received.take(n)]


@asynccontextmanager
async def start_nodes(kind: str, n: int = 1, *, ttl: float = 30.0) -> AsyncIterator[list[Node]]:
    """``n`` nodes sharing one backend: memory (one node) or a private Redis prefix."""
    async with AsyncExitStack() as stack:
        nodes = []
        for i, b in enumerate(await node_backends(stack, kind, n, channels=["room:a"], ttl=ttl)):
            tracker = PresenceTracker(b.store, b.broker, node_id=f"n{i}", ttl=ttl)
            await stack.enter_async_context(tracker)
            nodes.append(Node(tracker, b.store, b.received, b.broker))
        yield nodes


NodesFactory = Callable[..., AbstractAsyncContextManager[list[Node]]]


@pytest.fixture(params=["memory", "redis"])
def make_node(request: pytest.FixtureRequest) -> NodesFactory:
    return functools.partial(start_nodes, request.param, 1)


@pytest.fixture
def make_cluster() -> NodesFactory:
    return functools.partial(start_nodes, "redis")


async def test_first_join_and_last_leave_are_published(make_node: NodesFactory) -> None:
    async with make_node() as [node]:
        tracker = node.tracker
        for conn in ("t1", "t2", "t3"):
            await tracker.join("room:a", conn, "alice", "Alice", {"color": "red"})
        assert await node.events(1) == [
            (
                "presence.join",
                {"user": "alice", "name": "Alice", "status": "online", "info": {"color": "red"}},
            )
        ]
        presence = await tracker.members("room:a", 10)
        assert [(m.user, m.connections) for m in presence.members] == [("alice", 3)]
        await tracker.leave("room:a", "t1")
        await tracker.leave_all("t2")
        await node.nothing_before_sentinel()
        await tracker.leave("room:a", "t3")
        await tracker.leave("room:a", "t3")
        assert await node.events(1) == [("presence.leave", {"user": "alice"})]
        await node.nothing_before_sentinel()
        assert tracker.channels_of("t3") == frozenset()


async def test_heartbeats_keep_entries_past_the_ttl(make_node: NodesFactory) -> None:
    async with make_node(ttl=0.3) as [node]:
        await node.tracker.join("room:a", "t1", "alice", None)
        await asyncio.sleep(0.7)  # the scenario: twice the TTL passes
        # Reading sweeps first: had the entry expired, its leave would be published by now.
        assert (await node.tracker.members("room:a", 10)).total == 1
        assert [e for e, _ in await node.events(1)] == ["presence.join"]
        await node.nothing_before_sentinel()


async def test_a_lost_entry_is_added_back_by_the_heartbeat(make_node: NodesFactory) -> None:
    async with make_node() as [node]:
        await node.tracker.join("room:a", "t1", "alice", None)
        assert await node.store.remove("room:a", "t1") == "alice"  # e.g. Redis lost it
        await node.tracker.heartbeat()
        assert (await node.tracker.members("room:a", 10)).total == 1
        assert [e for e, _ in await node.events(2)] == ["presence.join", "presence.join"]


async def test_a_dead_nodes_entries_expire_with_one_leave(make_cluster: NodesFactory) -> None:
    async with make_cluster(2, ttl=0.3) as [b, c]:
        # The dead node added these and then stopped refreshing them.
        dead = PresenceEntry("x1", "alice", "Alice", {}, "dead", 1.0)
        await b.store.add("room:a", dead)
        await b.tracker.join("room:a", "b1", "bob", None)
        await c.tracker.join("room:a", "c1", "carol", None)
        for node in (b, c):  # a heartbeat's sweep announces the leave
            events = await node.events(3)
            assert sorted(e for e, _ in events) == [
                "presence.join",
                "presence.join",
                "presence.leave",
            ]
            assert ("presence.leave", {"user": "alice"}) in events
        # Both trackers sweep: a read sweeps too, after any sweep under way on its node, so
        # a second leave would be published before the sentinel.
        for node in (b, c):
            await node.tracker.members("room:a", 10)
        await b.broker.publish("room:a", "test.sentinel", None)
        for node in (b, c):
            await node.received.sentinel_next("room:a")
        presence = await c.tracker.members("room:a", 10)
    assert [m.user for m in presence.members] == ["bob", "carol"]


async def test_leave_node_removes_everything_at_once(make_cluster: NodesFactory) -> None:
    async with make_cluster(2) as [a, b]:
        await a.tracker.join("room:a", "a1", "alice", None)
        await a.tracker.join("room:a", "a2", "alice", None)
        await b.tracker.join("room:a", "b1", "bob", None)
        await a.tracker.join("room:a", "a3", "bob", None)
        await b.events(2)
        await a.tracker.leave_node()
        assert await b.events(1) == [("presence.leave", {"user": "alice"})]
        await b.nothing_before_sentinel()
        presence = await b.tracker.members("room:a", 10)
    assert [(m.user, m.connections) for m in presence.members] == [("bob", 1)]


async def test_a_failed_removal_still_ends_in_one_leave(make_node: NodesFactory) -> None:
    async with make_node(ttl=0.3) as [node]:
        await node.tracker.join("room:a", "t1", "alice", None)
        await node.events(1)
        real_remove = node.store.remove

        async def unavailable(channel: str, conn: str) -> str | None:
            raise PresenceUnavailable("redis: down for a moment")

        node.store.remove = unavailable  # type: ignore[method-assign]
        await node.tracker.leave("room:a", "t1")  # does not raise
        node.store.remove = real_remove  # type: ignore[method-assign]
        # No local entries on the channel any more, yet this node sweeps it until it expired.
        assert await node.events(1) == [("presence.leave", {"user": "alice"})]
        # A read sweeps, after any sweep under way: a second leave would come before this.
        await node.tracker.members("room:a", 10)
        await node.nothing_before_sentinel()
