"""Channel occupancy across the cluster: which channels have a subscriber on any node.

The hub tells this node's tracker when a channel gets its first local subscriber and loses
its last one. The tracker keeps one entry per (node, channel) in the PresenceStore, under one
key of its own whose "users" are the channels: the store's atomic add and remove then tell
exactly one node, cluster-wide, that a channel became occupied (the first node's entry) or
vacated (the last one's), and that node announces it (``channel.occupied``,
``channel.vacated``). A heartbeat refreshes this node's entries and sweeps expired ones, so a
killed node's channels are announced vacated by whichever node sweeps next (within about the
TTL plus a heartbeat). A channel that flaps (last subscriber leaves, one arrives) faster than
the store is told may announce nothing: only settled changes count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from domain.graceful import finish_or_cancel
from realtime.broker import BrokerUnavailable
from realtime.periodic import Periodic
from realtime.presence import PresenceEntry, PresenceStore

log = logging.getLogger(__name__)

OCCUPIED_EVENT = "channel.occupied"
VACATED_EVENT = "channel.vacated"
# The store key of the occupancy entries: without a colon, it is no channel's name.
INDEX = "occupancy"
# Told (channel, event type, data) of each change this node announces; must not block.
ChangeHook = Callable[[str, str, dict[str, Any]], None]


class OccupancyTracker:
    def __init__(
        self, store: PresenceStore, *, node_id: str, ttl: float, on_change: ChangeHook
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._on_change = on_change
        self._desired: dict[str, bool] = {}
        self._stored: set[str] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._heartbeat = Periodic(self.heartbeat, ttl / 3, name="occupancy-heartbeat")

    async def __aenter__(self) -> Self:
        self._heartbeat.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._heartbeat.stop()
        await finish_or_cancel(list(self._workers.values()), 2.0)
        # This node's channels go now, not when their entries expire.
        for channel in list(self._stored):
            self._desired[channel] = False
            await self._settle(channel)

    def changed(self, channel: str, occupied: bool) -> None:
        """The hub's hook: ``channel`` has local subscribers now (or has none left)."""
        self._desired[channel] = occupied
        if channel not in self._workers:
            self._workers[channel] = asyncio.create_task(
                self._settle(channel), name=f"occupancy-{channel}"
            )

    async def idle(self) -> None:
        """Wait until what the hub said so far is in the store (or failed to get there)."""
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def heartbeat(self) -> None:
        """Refresh this node's entries (adding back lost ones) and sweep expired ones."""
        if self._stored:
            conns = [self._conn(channel) for channel in self._stored]
            for conn in await self._store.touch(INDEX, conns):
                channel = conn[len(self._node_id) + 1 :]
                if channel in self._stored and await self._store.add(INDEX, self._entry(channel)):
                    self._announce(channel, OCCUPIED_EVENT)
        for channel in await self._store.expire(INDEX):
            self._announce(channel, VACATED_EVENT)

    async def _settle(self, channel: str) -> None:
        """Bring the store in line with what the hub said last (it may change meanwhile)."""
        try:
            while (want := self._desired.get(channel, False)) != (channel in self._stored):
                if want:
                    self._stored.add(channel)  # before the call: the heartbeat heals a failure
                    if await self._store.add(INDEX, self._entry(channel)):
                        self._announce(channel, OCCUPIED_EVENT)
                else:
                    # Forgotten first: a failed removal expires, and the sweep announces it.
                    self._stored.discard(channel)
                    if await self._store.remove(INDEX, self._conn(channel)) is not None:
                        self._announce(channel, VACATED_EVENT)
        except BrokerUnavailable as exc:
            log.warning("occupancy of %s not recorded (%s); the heartbeat repairs it", channel, exc)
        finally:
            if self._workers.get(channel) is asyncio.current_task():
                del self._workers[channel]
            if not self._desired.get(channel, True):
                del self._desired[channel]

    def _announce(self, channel: str, event: str) -> None:
        try:
            self._on_change(channel, event, {})
        except Exception:
            log.exception("occupancy hook failed for %s %s", event, channel)

    def _conn(self, channel: str) -> str:
        return f"{self._node_id}|{channel}"

    def _entry(self, channel: str) -> PresenceEntry:
        return PresenceEntry(self._conn(channel), channel, node=self._node_id, ts=time.time())
