"""The PresenceStore contract, run against every implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest
from redis import asyncio as aioredis

from realtime.presence import (
    Member,
    PresenceEntry,
    PresenceOptions,
    PresenceStore,
    combine_statuses,
    create_presence_store,
)
from tests.support.redis import broker_url, redis_prefix, redis_url, unique_prefix
from tests.support.redis_cluster import PrivateRedisCluster

STORES = ["memory", "redis", "redis-cluster"]

# Yields two handles on one shared store: two nodes (Redis) or the same store twice (memory).
StoreFactory = Callable[..., AbstractAsyncContextManager[tuple[PresenceStore, PresenceStore]]]


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    kind = request.param
    cluster: PrivateRedisCluster | None = None
    if kind == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")

    @asynccontextmanager
    async def factory(ttl: float = 30.0) -> AsyncIterator[tuple[PresenceStore, PresenceStore]]:
        async with AsyncExitStack() as stack:
            url = "memory://"
            if cluster is not None:
                url = cluster.broker_url(unique_prefix())
            elif kind == "redis":
                url = broker_url(await stack.enter_async_context(redis_prefix()))
            first = create_presence_store(url, PresenceOptions(ttl=ttl))
            await stack.enter_async_context(first)
            second = first
            if kind != "memory":
                second = create_presence_store(url, PresenceOptions(ttl=ttl))
                await stack.enter_async_context(second)
            yield first, second

    return factory


def entry(conn: str, user: str, name: str | None = None, **info: object) -> PresenceEntry:
    return PresenceEntry(conn, user, name, dict(info), node="n1", ts=float(len(conn)))


async def test_first_connection_of_a_user_joins_and_the_last_leaves(
    make_store: StoreFactory,
) -> None:
    async with make_store() as (store, _):
        assert await store.add("room:a", entry("c1", "alice")) is True
        assert await store.add("room:a", entry("c2", "alice")) is False
        assert await store.add("room:a", entry("c3", "bob")) is True
        assert await store.remove("room:a", "c1") is None
        assert await store.remove("room:a", "c2") == "alice"
        assert await store.remove("room:a", "c2") is None
        assert await store.remove("room:a", "never") is None
        assert await store.add("room:a", entry("c4", "alice")) is True


async def test_readding_a_stored_connection_is_not_a_join(make_store: StoreFactory) -> None:
    async with make_store() as (store, _):
        assert await store.add("room:a", entry("c1", "alice", "Alice"))
        assert not await store.add("room:a", entry("c1", "alice", "Alice B."))
        presence = await store.members("room:a", 10)
    assert presence.members == [Member("alice", "Alice B.", {}, 1)]


async def test_members_are_aggregated_per_user(make_store: StoreFactory) -> None:
    async with make_store() as (store, other):
        for conn in ("t1", "t2", "tab3"):
            await store.add("doc:7", entry(conn, "alice", "Alice", cursor=len(conn)))
        await other.add("doc:7", entry("b", "bob"))
        presence = await other.members("doc:7", 100)
    assert presence.total == 2
    assert presence.members == [
        # name and info come from the newest entry (the longest conn id, see entry())
        Member("alice", "Alice", {"cursor": 4}, 3),
        Member("bob", None, {}, 1),
    ]


async def test_limit_caps_members_but_total_counts_everyone(make_store: StoreFactory) -> None:
    async with make_store() as (store, _):
        for i in range(7):
            await store.add("room:big", entry(f"c{i}", f"user{i}"))
        await store.add("room:big", entry("extra", "user3"))
        presence = await store.members("room:big", 3)
        none = await store.members("room:big", 0)
    assert [m.user for m in presence.members] == ["user0", "user1", "user2"]
    assert presence.total == 7
    assert none.members == [] and none.total == 7


async def test_channels_are_independent(make_store: StoreFactory) -> None:
    async with make_store() as (store, _):
        assert await store.add("room:a", entry("c1", "alice"))
        assert await store.add("room:b", entry("c1", "alice"))
        assert await store.remove("room:a", "c1") == "alice"
        assert [m.user for m in (await store.members("room:b", 10)).members] == ["alice"]
        assert (await store.members("room:a", 10)).total == 0
        assert (await store.members("room:never", 10)).total == 0


async def test_entries_expire_after_the_ttl_and_leave_once(make_store: StoreFactory) -> None:
    async with make_store(ttl=0.3) as (store, other):
        await store.add("room:a", entry("c1", "alice"))
        await store.add("room:a", entry("c2", "alice"))
        await store.add("room:a", entry("c3", "bob"))
        assert await store.expire("room:a") == []
        await asyncio.sleep(0.45)
        # Expired entries never show, even before anyone sweeps them.
        assert (await other.members("room:a", 10)).total == 0
        results = await asyncio.gather(store.expire("room:a"), other.expire("room:a"))
        assert sorted(results[0] + results[1]) == ["alice", "bob"]
        assert await store.expire("room:a") == []
        assert await store.remove("room:a", "c1") is None
        assert await store.add("room:a", entry("c1", "alice")) is True


async def test_touch_keeps_entries_alive_and_reports_missing_ones(
    make_store: StoreFactory,
) -> None:
    async with make_store(ttl=0.4) as (store, other):
        await store.add("room:a", entry("c1", "alice"))
        await store.add("room:a", entry("c2", "bob"))
        for _ in range(4):
            await asyncio.sleep(0.15)
            assert await store.touch("room:a", ["c1", "gone"]) == {"gone"}
        assert await other.expire("room:a") == ["bob"]
        presence = await other.members("room:a", 10)
        assert [m.user for m in presence.members] == ["alice"]
        assert await store.touch("room:a", []) == set()
        assert await store.touch("room:none", ["c9"]) == {"c9"}
        assert (await store.members("room:none", 10)).total == 0


async def test_a_user_with_one_live_connection_stays(make_store: StoreFactory) -> None:
    async with make_store(ttl=0.3) as (store, _):
        await store.add("room:a", entry("stale", "alice"))
        await asyncio.sleep(0.2)
        await store.add("room:a", entry("fresh", "alice"))
        await asyncio.sleep(0.15)
        assert await store.expire("room:a") == []
        presence = await store.members("room:a", 10)
    assert presence.members == [Member("alice", None, {}, 1)]


async def test_concurrent_adds_and_removes_agree_on_joins(make_store: StoreFactory) -> None:
    async with make_store() as (store, other):
        joined = await asyncio.gather(
            *(s.add("room:a", entry(f"c{i}", "alice")) for i, s in enumerate([store, other] * 10))
        )
        assert joined.count(True) == 1
        left = await asyncio.gather(
            *(s.remove("room:a", f"c{i}") for i, s in enumerate([other, store] * 10))
        )
    assert left.count("alice") == 1 and left.count(None) == 19


async def test_entries_round_trip(make_store: StoreFactory) -> None:
    info = {"color": "#ff0", "cursor": {"line": 3, "ch": 1.5}, "tags": ["a", None], "ü": "ß"}
    async with make_store() as (store, _):
        await store.add("doc:x", PresenceEntry("c1", "zoë", "Zoë Ö", info, "node-a", 12.5))
        presence = await store.members("doc:x", 10)
    assert presence.members == [Member("zoë", "Zoë Ö", info, 1)]


async def test_entries_and_statuses(make_store: StoreFactory) -> None:
    async with make_store(ttl=0.3) as (store, other):
        await store.add("room:s", replace(entry("c1", "alice"), status="away"))
        await other.add("room:s", replace(entry("c2", "alice"), status="busy"))
        await store.add("room:s", entry("c3", "bob"))
        stored = await other.entries("room:s")
        assert sorted((e.conn, e.status) for e in stored) == [
            ("c1", "away"),
            ("c2", "busy"),
            ("c3", "online"),
        ]
        assert stored[0] == next(
            e for e in await store.entries("room:s") if e.conn == stored[0].conn
        )
        presence = await store.members("room:s", 10)
        assert [(m.user, m.status) for m in presence.members] == [
            ("alice", "busy"),
            ("bob", "online"),
        ]
        assert await store.entries("room:never") == []
        assert await other.statuses("room:s") == {"away", "busy", "online"}
        await store.add("room:s", replace(entry("c1", "alice"), status="online"))
        await other.remove("room:s", "c2")
        assert await other.statuses("room:s") == {"online"}
        assert await store.statuses("room:never") == set()
        await asyncio.sleep(0.45)
        assert await store.entries("room:s") == []  # expired entries never show
        assert await other.statuses("room:s") == set()


def test_statuses_combine_busy_then_online_then_away() -> None:
    assert combine_statuses([]) == "offline"
    assert combine_statuses(["away"]) == "away"
    assert combine_statuses(["away", "online"]) == "online"
    assert combine_statuses(["online", "busy", "away"]) == "busy"


async def test_using_a_store_outside_its_context_says_how_to_fix() -> None:
    for url in ("memory://", broker_url("tandem-test-unused:")):
        store = create_presence_store(url, PresenceOptions())
        with pytest.raises(RuntimeError, match="async with"):
            await store.add("room:a", entry("c1", "alice"))


def test_unknown_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="memory://"):
        create_presence_store("kafka://x", PresenceOptions())


async def test_redis_keys_are_hash_tagged_on_the_channel_under_the_prefix() -> None:
    async with redis_prefix() as prefix:
        store = create_presence_store(broker_url(prefix), PresenceOptions(ttl=5))
        async with store:
            await store.add("room:a", entry("c1", "alice"))
            await store.add("doc:b", entry("c1", "alice"))
        client = aioredis.from_url(redis_url())
        try:
            keys = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}*")])
            ttls = [await client.pttl(key) for key in keys]
        finally:
            await client.aclose()
    expected = [
        f"{prefix}{{{ch}}}:{s}"
        for ch in ("doc:b", "room:a")
        for s in ("pc", "pe", "ps", "pt", "pu")
    ]
    assert keys == expected
    assert all(0 < ttl <= 60_000 for ttl in ttls)
