"""finish_or_cancel: work under way finishes within the grace; the rest is cancelled."""

from __future__ import annotations

import asyncio

from domain.graceful import finish_or_cancel


async def test_quick_work_finishes_and_slow_work_is_cancelled_and_awaited() -> None:
    quick = asyncio.ensure_future(asyncio.sleep(0.01, result="done"))
    slow = asyncio.ensure_future(asyncio.sleep(10))
    await finish_or_cancel([quick, slow, quick], 0.1)
    assert quick.result() == "done"
    assert slow.cancelled()


async def test_nothing_to_wait_for_returns_at_once() -> None:
    finished = asyncio.ensure_future(asyncio.sleep(0))
    await finished
    async with asyncio.timeout(0.5):
        await finish_or_cancel([finished], 10.0)
        await finish_or_cancel([], 10.0)
