"""Background work repeated at an interval (heartbeats, purges) as one small object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``work`` every ``interval`` seconds between ``start()`` and ``stop()`` (or as
    ``async with``); a failure is logged and the next round still runs. ``immediately``: the
    first round at start, not after one interval."""

    def __init__(
        self,
        work: Callable[[], Awaitable[None]],
        interval: float,
        *,
        name: str,
        immediately: bool = False,
    ) -> None:
        self._work = work
        self._interval = interval
        self._name = name
        self._immediately = immediately
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Cancel and wait, so no round is still running when this returns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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
            try:
                await self._work()
            except Exception:
                log.exception("%s failed", self._name)
            await asyncio.sleep(self._interval)
