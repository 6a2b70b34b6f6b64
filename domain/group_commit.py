"""Group commit: commands that arrive together share one transaction.

A transaction costs about the same round trips (to SQLite's worker thread, or to PostgreSQL)
whether it changes one row or a hundred: about 13 thread hops of ~80 µs each on SQLite, which
capped one node at ~150 job updates/s (bench.jobs) with one transaction per update. Here a
command that arrives while a batch is being committed waits for the next batch and goes in with
every other command that arrived meanwhile; a command that arrives alone goes at once, so
batching adds no delay, only amortizes the cost once there is a queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")

# Applies a batch in arrival order; one outcome per command: its result, or the exception
# that refused it (which refuses only that command). Raising fails the whole batch.
ApplyBatch = Callable[[list[C]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[C, R]):
    """``await group.submit(command)`` returns the command's outcome once its batch committed.

    Batches run one at a time, in arrival order, so a later command never commits before an
    earlier one. A command already taken into a batch is applied even if its caller stops
    waiting; one still queued when its caller is cancelled is dropped.
    """

    def __init__(self, apply: ApplyBatch[C, R], *, max_batch: int = 100) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._queue: deque[tuple[C, asyncio.Future[R]]] = deque()
        self._batch: list[tuple[C, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, command: C) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if self._runner is None or self._runner.done():
            # Lives only while there is a queue; nothing is left running when it is empty.
            self._runner = asyncio.create_task(self._drain(), name="group-commit")
            self._runner.add_done_callback(self._stopped)
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch: list[tuple[C, asyncio.Future[R]]] = []
            self._batch = batch
            while self._queue and len(batch) < self._max_batch:
                command, future = self._queue.popleft()
                if not future.done():
                    batch.append((command, future))
            if not batch:
                continue
            try:
                outcomes: Sequence[R | Exception] = await self._apply(
                    [command for command, _ in batch]
                )
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} commands")
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        self._batch = []

    def _stopped(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and runner.exception() is None:
            return
        # Cancelled (the loop is shutting down), perhaps before it even started, or failed
        # outside a batch: nobody may wait forever for an answer. A newer runner, if any,
        # owns what is still queued.
        for _, future in self._batch:
            future.cancel()
        self._batch = []
        if self._runner is runner:
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
