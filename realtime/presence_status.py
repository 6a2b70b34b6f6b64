"""The StatusBoard: each user's status (online, away, busy, offline) across the cluster.

Every connection has an entry in the PresenceStore under the user's status key (not a channel:
nothing is published on it) holding the status the connection reported (``online`` until it
says otherwise) and the presence channels it is a member of. A user's status combines their
connections' (``combine_statuses``: busy, else online, else away); with no entry left they are
offline. Entries expire like channel presence, so a killed node's connections stop counting
within the TTL.

When a user's status changes while they stay connected, ``presence.update``
``{user, name, status}`` goes to their own ``user:<id>`` channel (their other tabs and devices)
and to every channel where any of their connections, on any node, is a presence member. Going
online or offline is not an update: ``presence.join`` / ``presence.leave`` on those channels say
it. Changes are computed from the store before and after each write, serialized per user on
this node; two nodes changing one user's status at the same moment may both announce, and the
presence request stays the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from realtime.broker import Broker, BrokerUnavailable
from realtime.channels import user_channel
from realtime.periodic import Periodic
from realtime.presence import OFFLINE, ONLINE, PresenceEntry, PresenceStore, combine_statuses

log = logging.getLogger(__name__)

UPDATE_EVENT = "presence.update"
_KEY_PREFIX = "~status:"  # "~" is never a channel kind, so this key never meets a channel


def status_key(user: str) -> str:
    """The store key of ``user``'s connections (public for tests and operators)."""
    return _KEY_PREFIX + user


class StatusBoard:
    def __init__(self, store: PresenceStore, broker: Broker, *, node_id: str, ttl: float) -> None:
        self._store = store
        self._broker = broker
        self._node_id = node_id
        self._interval = ttl / 3
        self._local: dict[str, PresenceEntry] = {}  # this node's connections
        self._dirty: set[str] = set()  # connections whose latest entry may not be stored
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # user -> lock, holders
        self._heartbeat = Periodic(self.heartbeat, self._interval, name="status-heartbeat")

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

    async def connect(self, conn: str, user: str, name: str | None, status: str = ONLINE) -> None:
        """Count ``conn`` for ``user``, starting with ``status``.

        Never raises for an unavailable store: the heartbeat writes the entry when it is back.
        """
        info: dict[str, Any] = {"channels": []}
        self._local[conn] = PresenceEntry(
            conn, user, name, info, self._node_id, time.time(), status
        )
        await self._save(conn, user, name, compare=True, strict=False)

    async def set_status(self, conn: str, status: str) -> str:
        """Record what ``conn`` reports; return its user's combined status.

        Raises:
            KeyError: ``conn`` is not connected here.
            BrokerUnavailable: the store is down (PresenceUnavailable is one); retry.
        """
        entry = self._local[conn] = replace(self._local[conn], status=status, ts=time.time())
        new = await self._save(conn, entry.user, entry.name, compare=True, strict=True)
        return new or status

    async def track(self, conn: str, channels: Collection[str]) -> None:
        """``conn`` is now a presence member of exactly ``channels`` (they get its updates)."""
        old = self._local.get(conn)
        if old is None or sorted(channels) == old.info["channels"]:
            return
        entry = self._local[conn] = replace(old, info={"channels": sorted(channels)})
        # The status does not change: no reads around this write.
        await self._save(conn, entry.user, entry.name, compare=False, strict=False)

    async def disconnect(self, conn: str) -> None:
        """``conn`` is gone; announce the user's new status if others of theirs remain."""
        entry = self._local.pop(conn, None)
        self._dirty.discard(conn)
        if entry is not None:
            await self._save(conn, entry.user, entry.name, compare=True, strict=False)

    async def leave_node(self) -> None:
        """Take all of this node's connections out now (graceful shutdown)."""
        await asyncio.gather(*(self.disconnect(conn) for conn in list(self._local)))

    # -- reads ------------------------------------------------------------------------------

    async def status(self, user: str) -> str:
        """``user``'s combined status cluster-wide.

        Raises:
            BrokerUnavailable: the store is down (PresenceUnavailable is one).
        """
        return combine_statuses(await self._store.statuses(status_key(user)))

    async def statuses(self, users: Iterable[str]) -> dict[str, str]:
        """The combined status of each of ``users`` (one store read each, side by side)."""
        users = list(users)
        found = await asyncio.gather(*(self.status(user) for user in users))
        return dict(zip(users, found, strict=True))

    # -- internals ----------------------------------------------------------------------------

    async def _save(
        self, conn: str, user: str, name: str | None, *, compare: bool, strict: bool
    ) -> str | None:
        """Store ``conn``'s current local entry (or remove it when there is none); with
        ``compare``, between two reads of the user's status, announcing a change.

        Writes of one user are serialized and write the entry as it is when their turn comes,
        so the store ends with the latest. Returns the user's new status when compared.
        """
        key = status_key(user)
        async with self._lock(user):
            try:
                # Statuses, not entries: a user with N connections would otherwise decode
                # all N entries twice on each connect (quadratic in N).
                before = await self._store.statuses(key) if compare else set()
                entry = self._local.get(conn)
                if entry is None:
                    await self._store.remove(key, conn)
                else:
                    await self._store.add(key, entry)
                    self._dirty.discard(conn)
                after = await self._store.statuses(key) if compare else set()
            except BrokerUnavailable as exc:
                if conn in self._local:
                    self._dirty.add(conn)  # the heartbeat writes it again
                if strict:
                    raise
                log.warning("status entry of %s not stored: %s", conn, exc)
                return None
        if not compare:
            return None
        old, new = combine_statuses(before), combine_statuses(after)
        if old != new and OFFLINE not in (old, new):
            channels = {user_channel(user)}
            try:
                for other in await self._store.entries(key):
                    channels.update(other.info.get("channels", ()))
            except BrokerUnavailable as exc:
                log.warning("announcing %s's status on their own channel only: %s", user, exc)
            await self._announce(user, name, new, channels)
        return new

    async def _announce(self, user: str, name: str | None, status: str, channels: set[str]) -> None:
        data = {"user": user, "name": name, "status": status}
        results = await asyncio.gather(
            *(self._broker.publish(channel, UPDATE_EVENT, data) for channel in sorted(channels)),
            return_exceptions=True,
        )
        for channel, result in zip(sorted(channels), results, strict=True):
            if isinstance(result, BrokerUnavailable):
                log.warning("could not announce %s is %s on %s: %s", user, status, channel, result)
            elif isinstance(result, BaseException):
                raise result

    @contextlib.asynccontextmanager
    async def _lock(self, user: str) -> AsyncIterator[None]:
        """One change per user at a time on this node; the lock lives while anyone holds it."""
        lock, holders = self._locks.setdefault(user, (asyncio.Lock(), [0]))
        holders[0] += 1
        try:
            async with lock:
                yield
        finally:
            holders[0] -= 1
            if not holders[0]:
                del self._locks[user]

    async def heartbeat(self) -> None:
        """Refresh this node's entries, add back lost ones and drop expired ones, per user."""
        by_user: dict[str, list[PresenceEntry]] = {}
        for entry in self._local.values():
            by_user.setdefault(entry.user, []).append(entry)
        failed = 0
        for user, entries in by_user.items():
            key = status_key(user)
            try:
                missing = await self._store.touch(key, [entry.conn for entry in entries])
                for entry in entries:
                    if entry.conn in missing or entry.conn in self._dirty:
                        await self._save(entry.conn, user, entry.name, compare=False, strict=True)
                await self._store.expire(key)
            except BrokerUnavailable:
                failed += 1
        if failed:
            log.warning("status heartbeat failed for %d user(s)", failed)
