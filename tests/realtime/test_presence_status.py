"""The StatusBoard on real brokers and stores: combined statuses, updates, several nodes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from realtime.broker import Broker
from realtime.presence import PresenceEntry, PresenceStore, PresenceUnavailable
from realtime.presence_status import StatusBoard, status_key
from realtime.presence_tracker import PresenceTracker
from tests.realtime.presence_nodes import node_backends
from tests.realtime.test_broker_contract import Received


class Node:
    def __init__(
        self,
        board: StatusBoard,
        tracker: PresenceTracker,
        store: PresenceStore,
        received: Received,
        broker: Broker,
    ) -> None:
        self.board = board
        self.tracker = tracker
        self.store = store
        self.received = received
        self.broker = broker

    async def nothing_before_sentinel(self) -> None:
        """A sentinel comes next: nothing was published before it (see Received)."""
        await self.received.nothing_before(self.broker, "room:a")

    async def events(self, n: int) -> list[tuple[str, str, object]]:
        return sorted((p.channel, p.event, p.data) for p in await self.received.take(n))


@asynccontextmanager
async def start_nodes(kind: str, n: int = 1, *, ttl: float = 30.0) -> AsyncIterator[list[Node]]:
    """``n`` nodes sharing one backend: memory (one node) or a private Redis prefix."""
    async with AsyncExitStack() as stack:
        nodes = []
        channels = ("room:a", "room:b", "user:alice")
        for i, b in enumerate(await node_backends(stack, kind, n, channels=channels, ttl=ttl)):
            board = StatusBoard(b.store, b.broker, node_id=f"n{i}", ttl=ttl)
            await stack.enter_async_context(board)
            tracker = PresenceTracker(b.store, b.broker, node_id=f"n{i}", ttl=ttl, statuses=board)
            await stack.enter_async_context(tracker)
            nodes.append(Node(board, tracker, b.store, b.received, b.broker))
        yield nodes


NodesFactory = Callable[..., AbstractAsyncContextManager[list[Node]]]


@pytest.fixture(params=["memory", "redis"])
def make_node(request: pytest.FixtureRequest) -> NodesFactory:
    return functools.partial(start_nodes, request.param, 1)


@pytest.fixture
def make_cluster() -> NodesFactory:
    return functools.partial(start_nodes, "redis")


def update(channel: str, status: str) -> tuple[str, str, object]:
    return (channel, "presence.update", {"user": "alice", "name": "Alice", "status": status})


async def test_a_user_is_away_only_when_every_connection_is(make_node: NodesFactory) -> None:
    async with make_node() as [node]:
        board = node.board
        await board.connect("t1", "alice", "Alice")
        await board.connect("t2", "alice", "Alice")
        await node.tracker.join("room:a", "t1", "alice", "Alice")
        await node.events(1)  # the join
        assert await board.set_status("t1", "away") == "online"
        await node.nothing_before_sentinel()
        assert await board.set_status("t2", "away") == "away"
        assert await node.events(2) == [update("room:a", "away"), update("user:alice", "away")]
        assert await board.set_status("t2", "busy") == "busy"
        assert await node.events(2) == [update("room:a", "busy"), update("user:alice", "busy")]
        await board.disconnect("t2")  # the busy tab goes: away again
        assert await node.events(2) == [update("room:a", "away"), update("user:alice", "away")]
        assert await board.statuses(["alice", "nobody"]) == {"alice": "away", "nobody": "offline"}
        presence = await node.tracker.members("room:a", 10)
        assert [(m.user, m.status) for m in presence.members] == [("alice", "away")]


async def test_joins_carry_the_status_and_going_offline_is_no_update(
    make_node: NodesFactory,
) -> None:
    async with make_node() as [node]:
        await node.board.connect("t1", "alice", "Alice")
        await node.board.set_status("t1", "busy")
        await node.events(1)  # user:alice
        await node.tracker.join("room:b", "t1", "alice", "Alice")
        (joined,) = await node.events(1)
        assert joined[1:] == (
            "presence.join",
            {"user": "alice", "name": "Alice", "status": "busy", "info": {}},
        )
        await node.tracker.leave_all("t1")
        await node.board.disconnect("t1")
        assert [e for _, e, _ in await node.events(1)] == ["presence.leave"]
        await node.nothing_before_sentinel()
        assert await node.board.status("alice") == "offline"


async def test_updates_reach_channels_joined_through_another_node(
    make_cluster: NodesFactory,
) -> None:
    async with make_cluster(2) as [a, b]:
        await a.board.connect("a1", "alice", "Alice")
        await a.tracker.join("room:a", "a1", "alice", "Alice")
        await b.board.connect("b1", "alice", "Alice")
        await b.tracker.join("room:b", "b1", "alice", "Alice")
        for node in (a, b):
            await node.events(2)  # the joins
        await a.board.set_status("a1", "away")  # b1 is still online
        await a.broker.publish("room:a", "test.sentinel", None)
        for node in (a, b):
            await node.received.sentinel_next("room:a")
        assert await b.board.set_status("b1", "away") == "away"
        expected = [
            update("room:a", "away"),
            update("room:b", "away"),
            update("user:alice", "away"),
        ]
        for node in (a, b):
            assert await node.events(3) == expected
        # Leaving a channel stops its updates.
        await a.tracker.leave("room:a", "a1")
        for node in (a, b):
            await node.events(1)  # the leave
        await a.board.set_status("a1", "online")
        expected = [update("room:b", "online"), update("user:alice", "online")]
        for node in (a, b):
            assert await node.events(2) == expected


async def test_a_dead_nodes_connections_stop_counting(make_cluster: NodesFactory) -> None:
    async with make_cluster(1, ttl=0.3) as [node]:
        dead = PresenceEntry("x1", "alice", "Alice", {"channels": []}, "dead", 1.0, "busy")
        await node.store.add(status_key("alice"), dead)
        await node.board.connect("t1", "alice", "Alice")
        assert await node.board.status("alice") == "busy"
        await asyncio.sleep(0.6)
        await node.board.heartbeat()  # refreshes (or adds back) t1 only
        assert await node.board.status("alice") == "online"
        assert [e.conn for e in await node.store.entries(status_key("alice"))] == ["t1"]


async def test_a_lost_entry_is_added_back_and_leave_node_removes_all(
    make_node: NodesFactory,
) -> None:
    async with make_node() as [node]:
        await node.board.connect("t1", "alice", "Alice")
        await node.board.set_status("t1", "away")
        await node.store.remove(status_key("alice"), "t1")  # e.g. Redis lost it
        await node.board.heartbeat()
        assert await node.board.status("alice") == "away"
        await node.board.leave_node()
        assert await node.board.status("alice") == "offline"
        with pytest.raises(KeyError):
            await node.board.set_status("t1", "busy")


async def test_a_failed_write_is_written_again_by_the_heartbeat(make_node: NodesFactory) -> None:
    async with make_node() as [node]:
        await node.board.connect("t1", "alice", "Alice")
        real_add = node.store.add

        async def unavailable(channel: str, entry: PresenceEntry) -> bool:
            raise PresenceUnavailable("redis: down for a moment")

        node.store.add = unavailable  # type: ignore[method-assign]
        with pytest.raises(PresenceUnavailable):
            await node.board.set_status("t1", "busy")
        await node.board.track("t1", ["room:a"])  # does not raise
        node.store.add = real_add  # type: ignore[method-assign]
        assert await node.board.status("alice") == "online"
        await node.board.heartbeat()
        (entry,) = await node.store.entries(status_key("alice"))
        assert (entry.status, entry.info) == ("busy", {"channels": ["room:a"]})
