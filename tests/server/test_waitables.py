"""SlimQueue and SlimEvent behave as asyncio.Queue and asyncio.Event for what uvicorn calls."""

from __future__ import annotations

import asyncio

import pytest

from server.transport.slim import SlimEvent, SlimQueue


async def test_queue_is_fifo_and_get_waits_for_an_item() -> None:
    queue: SlimQueue[int] = SlimQueue()
    assert queue.empty()
    for i in range(3):
        queue.put_nowait(i)
    assert [await queue.get() for _ in range(3)] == [0, 1, 2]
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(7)
    assert await asyncio.wait_for(waiting, 1) == 7
    assert queue.empty() and queue.qsize() == 0


async def test_waiting_getters_are_served_in_order() -> None:
    queue: SlimQueue[str] = SlimQueue()
    getters = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        queue.put_nowait(item)
    assert await asyncio.gather(*getters) == ["a", "b", "c"]


async def test_a_cancelled_getter_loses_no_item() -> None:
    queue: SlimQueue[int] = SlimQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(1)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it takes the item
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == 1
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    queue.put_nowait(2)
    assert await asyncio.wait_for(queue.get(), 1) == 2


async def test_event_wakes_every_waiter_and_clear_makes_wait_wait() -> None:
    event = SlimEvent()
    assert not event.is_set()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await event.wait() is True
    event.clear()
    waiting = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    event.set()
    assert event.is_set()


async def test_queue_join_waits_for_every_task_done() -> None:
    queue: SlimQueue[int] = SlimQueue()
    await queue.join()  # nothing put: returns at once
    await queue.put(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    assert queue.get_nowait() == 1
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    assert await queue.get() == 2
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    with pytest.raises(ValueError):
        queue.task_done()
