"""Channel occupancy across nodes, on the memory store (one node) and Redis (two)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from realtime.occupancy import OCCUPIED_EVENT, VACATED_EVENT, OccupancyTracker
from realtime.presence import PresenceOptions, PresenceStore, create_presence_store
from tests.support.redis import broker_url, redis_prefix


class Announced:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, channel: str, event: str, data: dict[str, Any]) -> None:
        assert data == {}
        self.events.append((event, channel))


@asynccontextmanager
async def stores(kind: str, ttl: float) -> AsyncIterator[tuple[PresenceStore, PresenceStore]]:
    async with AsyncExitStack() as stack:
        url = "memory://"
        if kind == "redis":
            url = broker_url(await stack.enter_async_context(redis_prefix()))
        first = await stack.enter_async_context(
            create_presence_store(url, PresenceOptions(ttl=ttl))
        )
        second = first
        if kind == "redis":
            second = await stack.enter_async_context(
                create_presence_store(url, PresenceOptions(ttl=ttl))
            )
        yield first, second


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_the_first_subscriber_anywhere_occupies_and_the_last_vacates(kind: str) -> None:
    announced = Announced()
    async with (
        stores(kind, 30.0) as (store_a, store_b),
        OccupancyTracker(store_a, node_id="a", ttl=30.0, on_change=announced) as a,
        OccupancyTracker(store_b, node_id="b", ttl=30.0, on_change=announced) as b,
    ):
        a.changed("room:x", True)
        await a.idle()
        b.changed("room:x", True)
        b.changed("room:y", True)
        await b.idle()
        assert announced.events == [(OCCUPIED_EVENT, "room:x"), (OCCUPIED_EVENT, "room:y")]
        a.changed("room:x", False)
        await a.idle()
        assert len(announced.events) == 2  # b still has a subscriber there
        b.changed("room:x", False)
        await b.idle()
        assert announced.events[2:] == [(VACATED_EVENT, "room:x")]
        # A flap settled before the store heard of it says nothing.
        a.changed("room:z", True)
        a.changed("room:z", False)
        await a.idle()
        assert announced.events[3:] == []
    # Leaving (graceful shutdown) vacates what the node still held.
    assert announced.events[3:] == [(VACATED_EVENT, "room:y")]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_dead_nodes_channels_are_vacated_by_the_next_sweep(kind: str) -> None:
    announced = Announced()
    ttl = 0.3
    async with stores(kind, ttl) as (store_a, store_b):
        # Node a is never entered: no heartbeat, no goodbye, like a node that was killed.
        dead = OccupancyTracker(store_a, node_id="a", ttl=ttl, on_change=announced)
        dead.changed("room:x", True)
        await dead.idle()
        assert announced.events == [(OCCUPIED_EVENT, "room:x")]
        survivor = OccupancyTracker(store_b, node_id="b", ttl=ttl, on_change=announced)
        await survivor.heartbeat()
        assert announced.events[1:] == []  # not expired yet
        await asyncio.sleep(ttl * 1.5)
        await survivor.heartbeat()
        assert announced.events[1:] == [(VACATED_EVENT, "room:x")]
        await survivor.heartbeat()
        assert announced.events[2:] == []
