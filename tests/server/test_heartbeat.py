"""The node's heartbeat: every session pinged on one timer, expired on another."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.transport.heartbeat import Beating, Heartbeat

INTERVAL, TIMEOUT = 0.05, 0.05


@dataclass(eq=False)
class FakeSession:
    name: str
    beat: int = 0
    awaiting_pong: bool = False
    closed: bool = False
    pings: list[float] = field(default_factory=list)


class Recorder:
    def __init__(self) -> None:
        self.expired: asyncio.Queue[str] = asyncio.Queue()
        self.pinged: asyncio.Queue[str] = asyncio.Queue()

    def ping(self, session: Beating) -> None:
        assert isinstance(session, FakeSession)
        session.pings.append(asyncio.get_running_loop().time())
        self.pinged.put_nowait(session.name)

    def expire(self, session: Beating) -> None:
        assert isinstance(session, FakeSession)
        session.closed = True
        self.expired.put_nowait(session.name)


async def test_a_session_that_answers_is_pinged_every_interval_and_one_that_does_not_expires() -> (
    None
):
    record = Recorder()
    heart = Heartbeat(INTERVAL, TIMEOUT, ping=record.ping, expire=record.expire)
    alive, dead = FakeSession("alive"), FakeSession("dead")
    started = asyncio.get_running_loop().time()
    heart.start(alive)
    heart.start(dead)
    try:
        async with asyncio.timeout(2):
            for _ in range(3):  # three rounds: alive answers each of its pings at once
                while await record.pinged.get() != "alive":
                    pass
                heart.pong(alive)
            assert await record.expired.get() == "dead"
    finally:
        heart.close()
    assert not alive.closed and dead.closed
    assert len(dead.pings) == 1, "a session is pinged once per round, not again while it owes"
    assert dead.pings[0] - started >= INTERVAL * 0.9
    gaps = [b - a for a, b in zip(alive.pings, alive.pings[1:], strict=False)]
    assert len(alive.pings) >= 3 and all(gap >= INTERVAL * 0.9 for gap in gaps), alive.pings


async def test_a_closed_session_is_neither_pinged_nor_expired() -> None:
    record = Recorder()
    heart = Heartbeat(INTERVAL, TIMEOUT, ping=record.ping, expire=record.expire)
    gone, witness = FakeSession("gone"), FakeSession("witness")
    heart.start(gone)
    gone.closed = True
    heart.start(witness)  # due after gone: its ping proves gone's turn has passed
    try:
        async with asyncio.timeout(2):
            assert await record.pinged.get() == "witness"
            assert await record.expired.get() == "witness"
    finally:
        heart.close()
    assert gone.pings == [] and record.pinged.empty() and record.expired.empty()


async def test_a_pong_that_nobody_asked_for_changes_nothing() -> None:
    record = Recorder()
    heart = Heartbeat(INTERVAL, TIMEOUT, ping=record.ping, expire=record.expire)
    session = FakeSession("s")
    heart.start(session)
    beat = session.beat
    heart.pong(session)  # not awaiting one: no second schedule
    try:
        async with asyncio.timeout(2):
            await record.pinged.get()
            assert await record.expired.get() == "s"
    finally:
        heart.close()
    assert session.beat == beat and len(session.pings) == 1
