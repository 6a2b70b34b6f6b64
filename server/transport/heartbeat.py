"""Engine.IO's heartbeat for every session of a node on two timers.

The server pings each session ``interval`` after it opened or answered the last ping, and
ends a session that has not answered within ``timeout``. A timer or a sleeping task per
session would cost ~1.5 KiB each at rest; here the sessions wait in two deques in the order
they are due (the interval and the timeout are the same for all, so appending keeps each
sorted), and one timer per deque serves all that are due. Entries are not removed when a
session answers or ends: a stale entry (its ``beat`` moved on) is skipped when it comes up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol


class Beating(Protocol):
    beat: int
    awaiting_pong: bool
    closed: bool


class Heartbeat:
    def __init__(
        self,
        interval: float,
        timeout: float,
        *,
        ping: Callable[[Beating], None],
        expire: Callable[[Beating], None],
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self._ping = ping
        self._expire = expire
        self._pings: _Schedule = _Schedule(self._ping_due)
        self._deadlines: _Schedule = _Schedule(self._check_pong)

    def start(self, session: Beating) -> None:
        """Ping ``session`` once the interval has passed."""
        session.awaiting_pong = False
        session.beat += 1
        self._pings.add(self.interval, session)

    def pong(self, session: Beating) -> None:
        if session.awaiting_pong:
            self.start(session)

    def close(self) -> None:
        self._pings.close()
        self._deadlines.close()

    def _ping_due(self, session: Beating, beat: int) -> None:
        if session.closed or beat != session.beat:
            return
        session.awaiting_pong = True
        self._deadlines.add(self.timeout, session)
        self._ping(session)

    def _check_pong(self, session: Beating, beat: int) -> None:
        if not session.closed and beat == session.beat and session.awaiting_pong:
            self._expire(session)


class _Schedule:
    """Sessions due after one fixed delay, served by one timer."""

    __slots__ = ("_due", "_timer", "_fire")

    def __init__(self, fire: Callable[[Beating, int], None]) -> None:
        self._due: deque[tuple[float, Beating, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._fire = fire

    def add(self, delay: float, session: Beating) -> None:
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + delay, session, session.beat))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._run)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Whatever falls due within a millisecond goes now: one wake-up for a crowd.
        now = loop.time() + 0.001
        due = self._due
        while due and due[0][0] <= now:
            _, session, beat = due.popleft()
            self._fire(session, beat)
        self._timer = loop.call_at(due[0][0], self._run) if due else None
