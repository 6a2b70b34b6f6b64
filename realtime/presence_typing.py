"""The TypingTracker: who is typing on which channel, expiring without renewal.

A connection says ``typing: true`` while its user types (renewing every few seconds) and
``typing: false`` when they stop. Per channel and user, this node publishes
``presence.typing`` ``{user, name, typing: true, timeout_ms}`` when the first of the user's
connections here starts, and ``{user, name, typing: false}`` when the last one stops,
unsubscribes, disconnects, or has not renewed within ``timeout`` (the server clears indicators,
so a client that vanished mid-word never leaves one behind). A renewal is published again once
half the timeout has passed since the last ``true``, so clients may also clear an indicator
``timeout_ms`` after the last ``true`` they saw: that covers a node that died before it could
say ``false``.

Typing is per node: two connections of one user on different nodes typing on one channel are
announced by each node (``true`` twice; the first ``false`` clears it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from realtime.broker import Broker, BrokerUnavailable

log = logging.getLogger(__name__)

TYPING_EVENT = "presence.typing"


@dataclass(slots=True)
class _Typing:
    name: str | None
    conns: set[str] = field(default_factory=set)
    deadline: asyncio.TimerHandle | None = None
    announced: float = 0.0  # monotonic time of the last published ``true``; 0 when not typing
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TypingTracker:
    def __init__(self, broker: Broker, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the typing timeout must be positive")
        self._broker = broker
        self._timeout = timeout
        self._typing: dict[tuple[str, str], _Typing] = {}  # (channel, user) -> who types
        self._by_conn: dict[str, dict[str, str]] = {}  # conn -> channel -> user
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_node()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def start(self, channel: str, conn: str, user: str, name: str | None) -> None:
        """``conn`` types on ``channel`` (or renews): announce it if it is news.

        Raises:
            BrokerUnavailable: the announcement failed; the state is kept, retry.
        """
        key = (channel, user)
        state = self._typing.get(key)
        if state is None:
            state = self._typing[key] = _Typing(name)
        state.name = name
        state.conns.add(conn)
        self._by_conn.setdefault(conn, {})[channel] = user
        if state.deadline is not None:
            state.deadline.cancel()
        state.deadline = asyncio.get_running_loop().call_later(
            self._timeout, self._spawn_expiry, key
        )
        async with self._held(key, state):
            stale = time.monotonic() - state.announced >= self._timeout / 2
            if state.conns and (not state.announced or stale):
                await self._publish(channel, user, state, True)
                state.announced = time.monotonic()

    async def stop(self, channel: str, conn: str) -> None:
        """``conn`` stopped typing on ``channel`` (also: unsubscribed). Never raises."""
        user = self._drop(conn, channel)
        if user is None:
            return
        state = self._typing.get((channel, user))
        if state is not None:
            state.conns.discard(conn)
            await self._end_if_idle((channel, user), state)

    async def stop_all(self, conn: str) -> None:
        """``conn`` disconnected: it types nowhere any more."""
        for channel in list(self._by_conn.get(conn, {})):
            await self.stop(channel, conn)

    async def stop_node(self) -> None:
        """Everyone typing through this node stops now (graceful shutdown)."""
        await asyncio.gather(*(self.stop_all(conn) for conn in list(self._by_conn)))

    # -- internals ----------------------------------------------------------------------------

    def _drop(self, conn: str, channel: str) -> str | None:
        """Forget that ``conn`` types on ``channel``; return the user it typed as."""
        channels = self._by_conn.get(conn)
        if channels is None:
            return None
        user = channels.pop(channel, None)
        if not channels:
            del self._by_conn[conn]
        return user

    def _spawn_expiry(self, key: tuple[str, str]) -> None:
        task = asyncio.ensure_future(self._expire(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, key: tuple[str, str]) -> None:
        state = self._typing.get(key)
        if state is None:
            return
        channel, _ = key
        for conn in list(state.conns):
            self._drop(conn, channel)
        state.conns.clear()
        await self._end_if_idle(key, state)

    async def _end_if_idle(self, key: tuple[str, str], state: _Typing) -> None:
        async with self._held(key, state):
            if state.conns:
                return
            if state.deadline is not None:
                state.deadline.cancel()
                state.deadline = None
            if state.announced:
                state.announced = 0.0
                try:
                    await self._publish(key[0], key[1], state, False)
                except BrokerUnavailable as exc:
                    # Clients clear it themselves timeout_ms after the last ``true``.
                    log.warning("could not announce that %s stopped typing: %s", key[1], exc)

    async def _publish(self, channel: str, user: str, state: _Typing, typing: bool) -> None:
        data: dict[str, object] = {"user": user, "name": state.name, "typing": typing}
        if typing:
            data["timeout_ms"] = round(self._timeout * 1000)
        await self._broker.publish(channel, TYPING_EVENT, data)

    @contextlib.asynccontextmanager
    async def _held(self, key: tuple[str, str], state: _Typing) -> AsyncIterator[None]:
        """Announcements of one user on one channel go out in order; the state is forgotten
        once nobody types and nobody waits."""
        async with state.lock:
            yield
        if not state.conns and not state.announced and not state.lock.locked():
            if self._typing.get(key) is state:
                del self._typing[key]
