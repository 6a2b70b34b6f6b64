"""GroupCommit: concurrent commands share a batch, in order, and fail one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from domain.group_commit import GroupCommit


class Recorder:
    """Applies batches of ints: negative ones are refused; 0 fails the whole batch."""

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        if not held:
            self.release.set()

    async def apply(self, batch: list[int]) -> Sequence[int | Exception]:
        self.batches.append(batch)
        await self.release.wait()
        if 0 in batch:
            raise RuntimeError("the transaction failed")
        return [ValueError(n) if n < 0 else n * 10 for n in batch]


async def submitted(group: GroupCommit[int, int], *commands: int) -> list[asyncio.Task[int]]:
    """Submit each command from a task of its own, and let them all reach the queue."""
    tasks = [asyncio.create_task(group.submit(n)) for n in commands]
    await asyncio.sleep(0)
    return tasks


async def test_a_lone_command_goes_at_once() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.apply)
    assert await group.submit(1) == 10
    assert await group.submit(2) == 20
    assert recorder.batches == [[1], [2]]


async def test_commands_arriving_during_a_batch_go_together_in_order() -> None:
    recorder = Recorder(held=True)
    group = GroupCommit(recorder.apply, max_batch=3)
    (first,) = await submitted(group, 1)
    rest = await submitted(group, *range(2, 7))
    recorder.release.set()
    assert await first == 10
    assert [await task for task in rest] == [20, 30, 40, 50, 60]
    assert recorder.batches == [[1], [2, 3, 4], [5, 6]]


async def test_a_refused_command_fails_only_its_caller() -> None:
    recorder = Recorder(held=True)
    group = GroupCommit(recorder.apply)
    (blocker,) = await submitted(group, 1)
    tasks = await submitted(group, 2, -3, 4)
    recorder.release.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError)


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    recorder = Recorder(held=True)
    group = GroupCommit(recorder.apply)
    doomed = await submitted(group, 0, 5)
    (later,) = await submitted(group, 7)
    recorder.release.set()
    for task in doomed:
        with pytest.raises(RuntimeError, match="transaction failed"):
            await task
    assert await later == 70
    assert recorder.batches == [[0, 5], [7]]


async def test_a_caller_cancelled_while_queued_is_not_applied() -> None:
    recorder = Recorder(held=True)
    group = GroupCommit(recorder.apply)
    (blocker,) = await submitted(group, 1)
    gone, kept = await submitted(group, 2, 3)
    gone.cancel()
    recorder.release.set()
    assert await blocker == 10 and await kept == 30
    assert recorder.batches == [[1], [3]]


async def test_cancelling_the_batch_cancels_every_waiting_caller() -> None:
    recorder = Recorder(held=True)
    group = GroupCommit(recorder.apply)
    tasks = await submitted(group, 1, 2)
    (runner,) = [t for t in asyncio.all_tasks() if t.get_name() == "group-commit"]
    runner.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    # The next command starts a new batch.
    recorder.release.set()
    assert await group.submit(4) == 40


async def test_a_batch_answering_for_the_wrong_number_of_commands_fails_them_all() -> None:
    async def short(batch: list[int]) -> Sequence[int | Exception]:
        return [n * 10 for n in batch[1:]]

    group = GroupCommit(short)
    tasks = await submitted(group, 1, 2, 3)
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    # and the group still works
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(group.submit(5), 1)  # a batch of one, answered with none
