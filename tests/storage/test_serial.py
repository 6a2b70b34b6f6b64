"""The SQLite transaction lock: one holder, FIFO, urgent waiters first, cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest

from storage.serial import SerialLock


async def _take(lock: SerialLock, name: str, order: list[str], *, urgent: bool = False) -> None:
    async with lock.hold(urgent=urgent):
        order.append(name)
        await asyncio.sleep(0)


async def test_urgent_waiters_go_before_ordinary_ones_and_each_queue_is_fifo() -> None:
    lock, order = SerialLock(), list[str]()
    gate = asyncio.Event()

    async def first() -> None:
        async with lock.hold():
            order.append("first")
            await gate.wait()

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(_take(lock, f"n{i}", order)) for i in range(3)]
    await asyncio.sleep(0)
    waiters += [asyncio.create_task(_take(lock, f"u{i}", order, urgent=True)) for i in range(2)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(holder, *waiters)
    assert order == ["first", "u0", "u1", "n0", "n1", "n2"]
    assert not lock.locked


async def test_a_cancelled_waiter_neither_holds_nor_blocks_the_lock() -> None:
    lock, order = SerialLock(), list[str]()
    gate = asyncio.Event()

    async def first() -> None:
        async with lock.hold():
            await gate.wait()

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(_take(lock, "cancelled", order))
    later = asyncio.create_task(_take(lock, "later", order))
    await asyncio.sleep(0)
    cancelled.cancel()
    gate.set()
    await asyncio.gather(holder, later)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert order == ["later"] and not lock.locked


async def test_a_waiter_cancelled_as_it_is_handed_the_lock_passes_it_on() -> None:
    lock, order = SerialLock(), list[str]()
    async with lock.hold():
        handed = asyncio.create_task(_take(lock, "handed", order))
        later = asyncio.create_task(_take(lock, "later", order))
        await asyncio.sleep(0)
    # The release handed the lock to `handed`; cancel it before it runs.
    handed.cancel()
    await later
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert order == ["later"] and not lock.locked
