"""A queue and an event for one connection, without asyncio's per-object deques.

uvicorn gives every websocket an ``asyncio.Queue`` (four deques: items, getters, putters and
its ``join`` event's waiters) and an ``asyncio.Event`` (one more), and Engine.IO every session
another ``asyncio.Queue``. At ~760 bytes a deque, uvicorn's two were about 3.8 KiB of each
idle connection's ~41 (tracemalloc, 2,000 connections). These hold a list, and their waiters
only while someone waits. They offer what uvicorn and Engine.IO call: ``put``,
``put_nowait``, ``get``, ``get_nowait``, ``empty``, ``task_done`` and ``join`` (unbounded,
so ``put`` never waits); ``set``, ``clear``, ``is_set`` and ``wait``.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


def _wake_first(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


class SlimQueue(Generic[T]):
    """An unbounded FIFO queue: ``put_nowait`` never blocks; ``get`` waits for an item."""

    __slots__ = ("_items", "_getters", "_unfinished", "_finished")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: SlimEvent | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            _wake_first(self._getters)

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if not self._unfinished and self._finished is not None:
            self._finished.set()
            self._finished = None

    async def join(self) -> None:
        """Until every item put has been marked ``task_done``."""
        if self._unfinished:
            if self._finished is None:
                self._finished = SlimEvent()
            await self._finished.wait()

    async def get(self) -> T:
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if self._getters and getter in self._getters:
                    self._getters.remove(getter)
                elif self._items and self._getters:
                    _wake_first(self._getters)  # it was woken for an item it will not take
                raise
        if not self._getters:
            self._getters = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class SlimEvent:
    """``asyncio.Event``: ``set`` wakes every waiter, ``clear`` makes ``wait`` wait again."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters and waiter in self._waiters:
                self._waiters.remove(waiter)
