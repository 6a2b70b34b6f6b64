"""The TypingTracker on a real broker: announcements, renewals, expiry, disconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from realtime.broker import Broker, BrokerOptions, BrokerUnavailable, PublishResult, create_broker
from realtime.presence_typing import TypingTracker
from tests.realtime.test_broker_contract import Received, wait_ready
from tests.support.waiting import eventually

TIMEOUT = 0.4


class Typing:
    def __init__(self, tracker: TypingTracker, received: Received, broker: Broker) -> None:
        self.tracker = tracker
        self.received = received
        self.broker = broker

    async def nothing_before_sentinel(self) -> None:
        """A sentinel on room:a comes next: nothing was published before it."""
        await self.received.nothing_before(self.broker, "room:a")

    async def nothing_expires(self) -> None:
        """Bob starts typing now and never renews: his expiry comes from the same sweep as
        any pending one, later, so the next two events must be his start and his expiry."""
        await self.tracker.start("room:a", "b1", "bob", None)
        assert await self.events(2) == [("room:a", "bob", True), ("room:a", "bob", False)]

    async def events(self, n: int, within: float = 2.0) -> list[tuple[str, str, bool]]:
        pubs = await self.received.take(n, timeout=within)
        assert {p.event for p in pubs} == {"presence.typing"}
        return [(p.channel, p.data["user"], p.data["typing"]) for p in pubs]


@pytest.fixture
async def typing() -> AsyncIterator[Typing]:
    received = Received()
    async with create_broker("memory://", BrokerOptions(node_id="n0"), received) as broker:
        await wait_ready(broker)
        for channel in ("room:a", "room:b"):
            await broker.subscribe(channel)
        async with TypingTracker(broker, timeout=TIMEOUT) as tracker:
            yield Typing(tracker, received, broker)


async def test_start_renew_and_stop(typing: Typing) -> None:
    tracker = typing.tracker
    await tracker.start("room:a", "t1", "alice", "Alice")
    (pub,) = await typing.received.take(1)
    assert pub.data == {"user": "alice", "name": "Alice", "typing": True, "timeout_ms": 400}
    await tracker.start("room:a", "t1", "alice", "Alice")  # a renewal is no news
    await typing.nothing_before_sentinel()
    await tracker.stop("room:a", "t1")
    assert await typing.events(1) == [("room:a", "alice", False)]
    await tracker.stop("room:a", "t1")  # stopping twice, or never started: nothing
    await tracker.stop("room:b", "t9")
    await typing.nothing_before_sentinel()
    await typing.nothing_expires()  # and nothing of alice's expires later


async def test_an_indicator_without_renewal_expires(typing: Typing) -> None:
    await typing.tracker.start("room:a", "t1", "alice", None)
    await typing.events(1)
    started = time.monotonic()
    assert await typing.events(1) == [("room:a", "alice", False)]
    assert TIMEOUT - 0.05 <= time.monotonic() - started < TIMEOUT + 0.3
    await typing.tracker.stop("room:a", "t1")  # already over
    await typing.nothing_before_sentinel()


async def test_renewals_are_announced_again_after_half_the_timeout(typing: Typing) -> None:
    await typing.tracker.start("room:a", "t1", "alice", None)
    await typing.events(1)
    for _ in range(5):  # typing on for 5 x 0.12 s, longer than the timeout
        await asyncio.sleep(0.12)
        await typing.tracker.start("room:a", "t1", "alice", None)
    events = await typing.events(2)  # at about 0.24 s and 0.48 s
    assert events == [("room:a", "alice", True)] * 2
    assert await typing.events(1) == [("room:a", "alice", False)]


async def test_one_user_in_two_tabs_stops_with_the_last_one(typing: Typing) -> None:
    tracker = typing.tracker
    await tracker.start("room:a", "t1", "alice", None)
    await tracker.start("room:a", "t2", "alice", None)
    await tracker.start("room:b", "t2", "alice", None)
    await tracker.start("room:a", "b1", "bob", None)
    assert sorted(await typing.events(3)) == [
        ("room:a", "alice", True),
        ("room:a", "bob", True),
        ("room:b", "alice", True),
    ]
    await tracker.stop("room:a", "t1")
    await typing.nothing_before_sentinel()
    await tracker.stop_all("t2")  # t2 disconnected
    assert sorted(await typing.events(2)) == [
        ("room:a", "alice", False),
        ("room:b", "alice", False),
    ]
    await tracker.stop_node()  # graceful shutdown: bob stops too
    assert await typing.events(1) == [("room:a", "bob", False)]


async def test_a_failed_announcement_is_not_followed_by_a_stop() -> None:
    class DownForAlice:
        """Records every attempt; refuses alice's."""

        def __init__(self) -> None:
            self.tried: list[tuple[str, bool]] = []

        async def publish(self, channel: str, event: str, data: dict) -> PublishResult:
            self.tried.append((data["user"], data["typing"]))
            if data["user"] == "alice":
                raise BrokerUnavailable("down")
            return PublishResult(offset=len(self.tried), epoch="e", duplicate=False)

    broker = DownForAlice()
    tracker = TypingTracker(broker, timeout=0.1)  # type: ignore[arg-type]
    async with tracker:
        with pytest.raises(BrokerUnavailable):
            await tracker.start("room:a", "t1", "alice", None)
        # Expiry says nothing: nobody was told it started. Bob starts after her, so his
        # expiry comes from the same sweep, later: by then alice's would have been tried.
        await tracker.start("room:a", "b1", "bob", None)
        await eventually(lambda: ("bob", False) in broker.tried, within=2)
        assert broker.tried == [("alice", True), ("bob", True), ("bob", False)]
        await tracker.stop_all("t1")
    with pytest.raises(ValueError, match="positive"):
        TypingTracker(DownForAlice(), timeout=0)  # type: ignore[arg-type]
