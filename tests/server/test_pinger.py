"""One timer pings every Engine.IO session when it is due (server.pinger)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engineio import packet

from server.pinger import Pinger
from tests.support.waiting import eventually


class Session:
    def __init__(self, sid: str, *, fails: bool = False) -> None:
        self.sid = sid
        self.fails = fails
        self.closing = self.closed = False
        self.last_ping: float | None = None
        self.sent: list[tuple[float, Any]] = []

    async def send(self, pkt: packet.Packet) -> None:
        if self.fails:
            raise RuntimeError("broken")
        self.sent.append((time.monotonic(), pkt.packet_type))


async def test_each_session_is_pinged_once_its_interval_has_passed() -> None:
    pinger = Pinger(0.2, resolution=0.01)
    first, second = Session("a"), Session("b")
    start = time.monotonic()
    pinger.schedule(first)
    await asyncio.sleep(0.1)  # the scenario: the second session comes 0.1 s later
    pinger.schedule(second)
    await eventually(lambda: first.sent, within=2)
    assert [p for _, p in first.sent] == [packet.PING] and second.sent == []
    assert first.last_ping is not None
    await eventually(lambda: second.sent, within=2)
    assert [p for _, p in second.sent] == [packet.PING]
    assert first.sent[0][0] - start >= 0.2 and second.sent[0][0] - start >= 0.3
    assert len(pinger) == 0
    pinger.close()


async def test_closed_sessions_are_skipped_and_one_failure_spares_the_rest() -> None:
    pinger = Pinger(0.05, resolution=0.01)
    closed, broken, fine = Session("closed"), Session("broken", fails=True), Session("fine")
    closed.closed = True
    for session in (closed, broken, fine):
        pinger.schedule(session)
    await eventually(lambda: fine.sent, within=2)  # the same round as the others
    assert closed.sent == [] and closed.last_ping is None
    assert [p for _, p in fine.sent] == [packet.PING]
    pinger.close()


async def test_close_stops_every_pending_ping() -> None:
    pinger = Pinger(0.05)
    session = Session("a")
    pinger.schedule(session)
    pinger.close()
    # A timer of our own, due after the ping was: the loop runs timers in due order, and a
    # ping's task would then have run first.
    await loop_time_passed(asyncio.get_running_loop().time() + 0.1)
    assert session.sent == [] and len(pinger) == 0


async def loop_time_passed(when: float) -> None:
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_at(when, done.set_result, None)
    await done
    await asyncio.sleep(0)  # tasks a timer due before ``when`` created have run too
