"""Periodic: rounds at an interval; failures logged; stop() lets a running round finish."""

from __future__ import annotations

import asyncio
import time

from realtime.periodic import Periodic


async def test_a_round_running_at_stop_finishes_before_stop_returns() -> None:
    events: list[str] = []
    running = asyncio.Event()

    async def work() -> None:
        events.append("start")
        running.set()
        await asyncio.sleep(0.1)  # e.g. a database call in a driver's thread
        events.append("end")

    periodic = Periodic(work, 60.0, name="t", immediately=True)
    periodic.start()
    await asyncio.wait_for(running.wait(), 5)
    await periodic.stop()
    assert events == ["start", "end"]


async def test_a_round_over_its_grace_is_cancelled() -> None:
    cancelled, running = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        running.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    periodic = Periodic(work, 60.0, name="t", immediately=True, grace=0.05)
    periodic.start()
    await asyncio.wait_for(running.wait(), 5)
    started = time.monotonic()
    await periodic.stop()
    assert cancelled.is_set() and time.monotonic() - started < 1.0


async def test_a_failing_round_is_followed_by_the_next() -> None:
    rounds: list[int] = []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("first round fails")

    async with Periodic(work, 0.01, name="t", immediately=True):
        for _ in range(100):
            if len(rounds) >= 3:
                break
            await asyncio.sleep(0.01)
    assert rounds[:3] == [0, 1, 2]


async def test_stop_between_rounds_is_prompt() -> None:
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    periodic = Periodic(work, 60.0, name="t", immediately=True)
    periodic.start()
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)  # the round has returned: the loop now waits for the next
    started = time.monotonic()
    await periodic.stop()
    await periodic.stop()  # twice is fine
    assert time.monotonic() - started < 0.5
