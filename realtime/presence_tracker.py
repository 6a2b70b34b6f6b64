"""The PresenceTracker: this node's connections in the PresenceStore, and the events they cause.

A user's first connection on a channel publishes ``presence.join`` ``{user, name, status,
info}`` on
that channel through the broker, their last one leaving publishes ``presence.leave``
``{user}``: every node and the history see them, with an offset. Whoever the store tells that
a user arrived or left (exactly one caller, cluster-wide) publishes, so each event goes out
once however many nodes notice.

A heartbeat refreshes this node's entries every ``ttl / 3``, adds back any the store lost, and
sweeps expired entries (a killed node's) on the channels this node has entries on, or failed
to remove entries from. Reads sweep too. Operations on one channel are serialized on this node,
so this node's events for a channel are published in the order the store saw them; a user
leaving on one node while joining on another may be announced in either order, and the store
(the presence request) stays the source of truth.

With a StatusBoard, members carry their user's cluster-wide status, and the board learns which
channels each connection is a member of (where that user's status updates go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from realtime.broker import Broker, BrokerUnavailable
from realtime.periodic import Periodic
from realtime.presence import OFFLINE, ONLINE, Presence, PresenceEntry, PresenceStore

if TYPE_CHECKING:
    from realtime.presence_status import StatusBoard

log = logging.getLogger(__name__)

JOIN_EVENT = "presence.join"
LEAVE_EVENT = "presence.leave"
# Told "join", "leave" or "expired" for every event this node publishes (for metrics).
EventHook = Callable[[str], None]
# Told (channel, event type, data) of every event this node publishes, once it is published
# (for outgoing webhooks); must not block.
ChangeHook = Callable[[str, str, dict[str, Any]], None]


class PresenceTracker:
    def __init__(
        self,
        store: PresenceStore,
        broker: Broker,
        *,
        node_id: str,
        ttl: float,
        on_event: EventHook | None = None,
        statuses: StatusBoard | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        self._store = store
        self._on_change = on_change
        self._statuses = statuses
        self._broker = broker
        self._node_id = node_id
        self._ttl = ttl
        self._interval = ttl / 3
        self._on_event = on_event
        self._local: dict[str, dict[str, PresenceEntry]] = {}
        self._by_conn: dict[str, set[str]] = {}
        self._locks: dict[str, _ChannelLock] = {}
        # Channels where a removal failed, swept until their entries have surely expired.
        self._orphans: dict[str, float] = {}
        self._heartbeat = Periodic(self.heartbeat, self._interval, name="presence-heartbeat")

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
        await self.leave_node()

    # -- this node's connections --------------------------------------------------------------

    async def join(
        self,
        channel: str,
        conn: str,
        user: str,
        name: str | None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Add ``conn`` to ``channel``; publish ``presence.join`` if the user just arrived.

        Raises:
            BrokerUnavailable: the store or the broker is down (PresenceUnavailable is one);
                the entry may be stored: call ``leave`` to undo.
        """
        status = ONLINE
        if self._statuses is not None:
            # Connected, so never offline (their status entry may not be stored yet).
            status = _connected(await self._statuses.status(user), ONLINE)
        entry = PresenceEntry(conn, user, name, info or {}, self._node_id, time.time(), status)
        async with self._serialized(channel):
            self._local.setdefault(channel, {})[conn] = entry
            self._by_conn.setdefault(conn, set()).add(channel)
            if await self._store.add(channel, entry):
                await self._publish_join(channel, entry)
        await self._track(conn)

    async def leave(self, channel: str, conn: str) -> None:
        """Remove ``conn`` from ``channel``; publish ``presence.leave`` if the user is gone.

        Never raises for an unavailable store or broker: the entry then expires within the TTL
        and whichever node sweeps it announces the leave.
        """
        async with self._serialized(channel):
            if not self._forget(channel, conn):
                return
            try:
                user = await self._store.remove(channel, conn)
                if user is not None:
                    await self._publish_leave(channel, user, "leave")
            except BrokerUnavailable as exc:
                self._orphans[channel] = time.monotonic() + self._ttl + self._interval
                log.warning(
                    "presence leave of %s on %s failed (%s); it will expire", conn, channel, exc
                )
        await self._track(conn)

    async def leave_all(self, conn: str) -> None:
        """``conn`` disconnected: leave every channel it was on."""
        for channel in list(self._by_conn.get(conn, ())):
            await self.leave(channel, conn)

    async def leave_node(self) -> None:
        """Remove all of this node's entries now (graceful shutdown)."""
        await asyncio.gather(*(self._leave_channel(channel) for channel in list(self._local)))

    def channels_of(self, conn: str) -> frozenset[str]:
        return frozenset(self._by_conn.get(conn, ()))

    # -- reads ------------------------------------------------------------------------------

    async def members(self, channel: str, limit: int) -> Presence:
        """Who is on ``channel`` cluster-wide (sweeping expired entries first)."""
        await self.sweep(channel)
        presence = await self._store.members(channel, limit)
        if self._statuses is None or not presence.members:
            return presence
        found = await self._statuses.statuses(m.user for m in presence.members)
        members = [replace(m, status=_connected(found[m.user], m.status)) for m in presence.members]
        return Presence(members, presence.total)

    # -- heartbeat ----------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Refresh this node's entries, add back lost ones and sweep, on each local channel."""
        failed: list[str] = []
        error: BrokerUnavailable | None = None
        for channel in list(self._local.keys() | self._orphans.keys()):
            try:
                await self._refresh(channel)
                await self.sweep(channel)
            except BrokerUnavailable as exc:
                failed.append(channel)
                error = exc
            else:
                self._forget_orphan(channel)
        if failed:  # one line per round, however many channels (e.g. Redis is down)
            log.warning("presence heartbeat failed on %d channel(s): %s", len(failed), error)

    async def sweep(self, channel: str) -> None:
        """Delete expired entries on ``channel`` and announce the users who left with them."""
        async with self._serialized(channel):
            for user in await self._store.expire(channel):
                try:
                    await self._publish_leave(channel, user, "expired")
                except BrokerUnavailable as exc:
                    log.warning("could not announce that %s left %s: %s", user, channel, exc)

    async def _refresh(self, channel: str) -> None:
        local = self._local.get(channel)
        if not local:
            return
        missing = await self._store.touch(channel, list(local))
        if not missing:
            return
        async with self._serialized(channel):
            # Connections may have left while we waited; only the ones still here come back.
            for conn in missing:
                entry = self._local.get(channel, {}).get(conn)
                if entry is not None and await self._store.add(channel, entry):
                    await self._publish_join(channel, entry)

    # -- internals ----------------------------------------------------------------------------

    async def _leave_channel(self, channel: str) -> None:
        for conn in list(self._local.get(channel, ())):
            await self.leave(channel, conn)

    def _forget_orphan(self, channel: str) -> None:
        deadline = self._orphans.get(channel)
        if deadline is not None and time.monotonic() > deadline:
            del self._orphans[channel]

    def _forget(self, channel: str, conn: str) -> bool:
        local = self._local.get(channel)
        if local is None or local.pop(conn, None) is None:
            return False
        if not local:
            del self._local[channel]
        channels = self._by_conn.get(conn)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._by_conn[conn]
        return True

    async def _track(self, conn: str) -> None:
        if self._statuses is not None:
            await self._statuses.track(conn, self.channels_of(conn))

    async def _publish_join(self, channel: str, entry: PresenceEntry) -> None:
        data = {"user": entry.user, "name": entry.name, "status": entry.status, "info": entry.info}
        await self._broker.publish(channel, JOIN_EVENT, data)
        self._count("join")
        if self._on_change is not None:
            self._on_change(channel, JOIN_EVENT, data)

    async def _publish_leave(self, channel: str, user: str, reason: str) -> None:
        await self._broker.publish(channel, LEAVE_EVENT, {"user": user})
        self._count(reason)
        if self._on_change is not None:
            self._on_change(channel, LEAVE_EVENT, {"user": user, "reason": reason})

    def _count(self, kind: str) -> None:
        if self._on_event is not None:
            self._on_event(kind)

    @contextlib.asynccontextmanager
    async def _serialized(self, channel: str) -> AsyncIterator[None]:
        """One operation at a time per channel (FIFO); the lock lives while anyone holds it."""
        held = self._locks.get(channel)
        if held is None:
            held = self._locks[channel] = _ChannelLock()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if held.users == 0:
                del self._locks[channel]


def _connected(status: str, fallback: str) -> str:
    """A member is connected, so never offline: the board may not have stored them yet."""
    return fallback if status == OFFLINE else status


@dataclass(slots=True)
class _ChannelLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
