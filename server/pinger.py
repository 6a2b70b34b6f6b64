"""Engine.IO's heartbeat for every session of a node on one timer.

Engine.IO sends each session a PING ``ping_interval`` after it connected or answered the
last one, by starting a task per session that sleeps that long (``AsyncSocket._send_ping``).
At 5,000 idle connections that is 5,000 sleeping tasks, each with its coroutines, future and
timer, about 1.5 KiB apiece. Here the sessions wait in one deque in the order they are due
(the interval is the same for all, so appending keeps it sorted) and one timer sends the
pings of all that are due, at most ``resolution`` seconds late. The ping itself is Engine.IO's:
``last_ping`` is set and ``send`` is called as ``_send_ping`` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from engineio import packet

log = logging.getLogger(__name__)


class Pinger:
    def __init__(self, interval: float, *, resolution: float = 0.25) -> None:
        self._interval = interval
        self._resolution = resolution
        self._due: deque[tuple[float, Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, sock: Any) -> None:
        """Ping the Engine.IO session ``sock`` once the interval has passed."""
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self._interval, sock))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        for task in self._tasks:
            task.cancel()

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = []
        while self._due and self._due[0][0] <= now:
            due.append(self._due.popleft()[1])
        self._timer = None
        if self._due:
            self._timer = loop.call_at(max(self._due[0][0], now + self._resolution), self._fire)
        if due:
            task = loop.create_task(self._ping(due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _ping(socks: list[Any]) -> None:
        for sock in socks:
            if sock.closing or sock.closed:
                continue
            sock.last_ping = time.time()
            try:
                await sock.send(packet.Packet(packet.PING))
            except Exception:
                # One session's failure must not cost the others their ping.
                log.exception("ping to %s failed", sock.sid)
