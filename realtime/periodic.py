"""Background work repeated at an interval (heartbeats, purges) as one small object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from domain.graceful import finish_or_cancel

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``work`` every ``interval`` seconds between ``start()`` and ``stop()`` (or as
    ``async with``); a failure is logged and the next round still runs. ``immediately``: the
    first round at start, not after one interval. ``stop()`` lets a round that is running
    finish, for up to ``grace`` seconds, before it cancels it (``finish_or_cancel``)."""

    def __init__(
        self,
        work: Callable[[], Awaitable[None]],
        interval: float,
        *,
        name: str,
        immediately: bool = False,
        grace: float = 5.0,
    ) -> None:
        self._work = work
        self._interval = interval
        self._name = name
        self._immediately = immediately
        self._grace = grace
        self._task: asyncio.Task[None] | None = None
        self._round: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Stop; when this returns, no round is running."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        running, self._round = self._round, None
        if running is not None:
            await finish_or_cancel([running], self._grace)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _loop(self) -> None:
        if not self._immediately:
            await asyncio.sleep(self._interval)
        while True:
            self._round = asyncio.ensure_future(self._run_once())
            await asyncio.shield(self._round)  # stop() decides how a running round ends
            self._round = None
            await asyncio.sleep(self._interval)

    async def _run_once(self) -> None:
        try:
            await self._work()
        except Exception:
            log.exception("%s failed", self._name)
