"""MemoryPresenceStore: the single-node default. Real, not a test double."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from realtime.presence import Presence, PresenceEntry, PresenceOptions, aggregate


@dataclass(slots=True)
class _Channel:
    entries: dict[str, PresenceEntry] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)


class MemoryPresenceStore:
    """Dicts in this process. No method awaits, so each one is atomic."""

    def __init__(
        self, options: PresenceOptions, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = options.ttl
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._running = False

    async def __aenter__(self) -> Self:
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._running = False
        self._channels.clear()

    async def add(self, channel: str, entry: PresenceEntry) -> bool:
        self._require_running()
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        first = False
        if entry.conn not in state.entries:
            count = state.users.get(entry.user, 0) + 1
            state.users[entry.user] = count
            first = count == 1
        state.entries[entry.conn] = entry
        state.expires[entry.conn] = self._clock() + self._ttl
        return first

    async def remove(self, channel: str, conn: str) -> str | None:
        state = self._channel(channel)
        if state is None or conn not in state.entries:
            return None
        user = self._delete(state, conn)
        self._forget_if_empty(channel, state)
        return user

    async def touch(self, channel: str, conns: Collection[str]) -> set[str]:
        state = self._channel(channel)
        if state is None:
            return set(conns)
        deadline = self._clock() + self._ttl
        missing = set()
        for conn in conns:
            if conn in state.entries:
                state.expires[conn] = deadline
            else:
                missing.add(conn)
        return missing

    async def expire(self, channel: str) -> list[str]:
        state = self._channel(channel)
        if state is None:
            return []
        now = self._clock()
        left = []
        for conn in [c for c, deadline in state.expires.items() if deadline <= now]:
            user = self._delete(state, conn)
            if user is not None:
                left.append(user)
        self._forget_if_empty(channel, state)
        return left

    async def members(self, channel: str, limit: int) -> Presence:
        return aggregate(await self.entries(channel), limit)

    async def entries(self, channel: str) -> list[PresenceEntry]:
        state = self._channel(channel)
        if state is None:
            return []
        now = self._clock()
        return [e for conn, e in state.entries.items() if state.expires[conn] > now]

    async def statuses(self, channel: str) -> set[str]:
        return {entry.status for entry in await self.entries(channel)}

    def _channel(self, channel: str) -> _Channel | None:
        self._require_running()
        return self._channels.get(channel)

    def _require_running(self) -> None:
        if not self._running:
            raise RuntimeError("MemoryPresenceStore is not running: use `async with store:`")

    @staticmethod
    def _delete(state: _Channel, conn: str) -> str | None:
        """Delete ``conn``; return its user if they have no entry left."""
        entry = state.entries.pop(conn)
        del state.expires[conn]
        count = state.users[entry.user] - 1
        if count > 0:
            state.users[entry.user] = count
            return None
        del state.users[entry.user]
        return entry.user

    def _forget_if_empty(self, channel: str, state: _Channel) -> None:
        if not state.entries:
            self._channels.pop(channel, None)
