"""The PresenceStore seam: who is on each channel, across every node, expiring unless refreshed.

Implementations: ``MemoryPresenceStore`` (one node) and ``RedisPresenceStore`` (several nodes
sharing Redis), chosen with the broker by ``TANDEM_BROKER_URL``. Both run against one contract
suite (tests/realtime/test_presence_contract.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from realtime.broker import BrokerUnavailable

ONLINE = "online"
AWAY = "away"
BUSY = "busy"
OFFLINE = "offline"
# What a connection may report. Busy is a choice the user made, so it beats an active tab;
# an active tab beats an idle one: a user is away only when every connection is.
REPORTED_STATUSES = (BUSY, ONLINE, AWAY)


def combine_statuses(statuses: Iterable[str]) -> str:
    """A user's status from their connections' reported ones (``offline`` when there are none)."""
    seen = set(statuses)
    for status in REPORTED_STATUSES:
        if status in seen:
            return status
    return OFFLINE if not seen else ONLINE


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One connection on one channel. ``conn`` is unique cluster-wide and keeps its ``user``."""

    conn: str
    user: str
    name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    node: str = ""
    ts: float = 0.0  # wall-clock time of the add that created or last replaced the entry
    status: str = ONLINE  # what the connection reported (see REPORTED_STATUSES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "conn": self.conn,
            "user": self.user,
            "name": self.name,
            "info": self.info,
            "node": self.node,
            "ts": self.ts,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PresenceEntry:
        return cls(
            conn=str(raw["conn"]),
            user=str(raw["user"]),
            name=raw.get("name"),
            info=dict(raw.get("info") or {}),
            node=str(raw.get("node", "")),
            ts=float(raw.get("ts", 0.0)),
            status=str(raw.get("status", ONLINE)),
        )


@dataclass(frozen=True, slots=True)
class Member:
    """A user on a channel, however many connections (tabs, devices) they have there.

    ``status`` combines their entries' statuses (``combine_statuses``); the tracker replaces it
    with the user's cluster-wide status when it has a status board.
    """

    user: str
    name: str | None
    info: dict[str, Any]
    connections: int
    status: str = ONLINE

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "name": self.name,
            "status": self.status,
            "info": self.info,
            "connections": self.connections,
        }


@dataclass(frozen=True, slots=True)
class Presence:
    """At most ``limit`` members (ordered by user id) and how many users there are in all."""

    members: list[Member]
    total: int


@dataclass(frozen=True, slots=True)
class PresenceOptions:
    # Entries not refreshed within this many seconds are gone.
    ttl: float = 30.0


class PresenceUnavailable(BrokerUnavailable):
    """The presence store cannot be reached right now; the caller may retry."""


class PresenceStore(Protocol):
    """Per-channel presence entries keyed by connection, shared by every node.

    Use it as ``async with store:``. Every operation on one channel is atomic, so across all
    nodes exactly one caller sees each user arrive (``add`` returns True) and exactly one sees
    each user go (``remove`` or ``expire`` names them): that caller announces it. An entry not
    refreshed (``add`` or ``touch``) within ``ttl`` is expired: it no longer shows in
    ``members`` and the next ``expire`` deletes it, so a crashed node's connections vanish
    without any request to it.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def add(self, channel: str, entry: PresenceEntry) -> bool:
        """Store or replace ``entry`` (keyed by ``entry.conn``) and refresh its expiry.

        Returns True when this made ``entry.user`` present: no other entry of theirs was on
        the channel. Replacing an entry that is still stored returns False.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def remove(self, channel: str, conn: str) -> str | None:
        """Delete ``conn``'s entry; return its user if that was their last entry, else None.

        Removing an entry that is not stored (never added, removed, expired) returns None.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def touch(self, channel: str, conns: Collection[str]) -> set[str]:
        """Refresh the expiry of the stored entries among ``conns``; return those not stored.

        Never creates an entry: a connection reported missing must be added again.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def expire(self, channel: str) -> list[str]:
        """Delete entries past their expiry; return the users who have no entry left.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def members(self, channel: str, limit: int) -> Presence:
        """Unexpired entries aggregated per user: see ``aggregate``.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def entries(self, channel: str) -> list[PresenceEntry]:
        """Every unexpired entry on ``channel``, in no particular order.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...

    async def statuses(self, channel: str) -> set[str]:
        """The distinct ``status`` values of the unexpired entries on ``channel``: enough to
        combine a user's status, without reading (and decoding) every entry.

        Raises:
            PresenceUnavailable: retry later.
        """
        ...


def aggregate(entries: Iterable[PresenceEntry], limit: int) -> Presence:
    """One member per user, ordered by user id, with the name and info of their newest entry
    and the status combined from all of them."""
    by_user: dict[str, list[PresenceEntry]] = {}
    for entry in entries:
        by_user.setdefault(entry.user, []).append(entry)
    users = sorted(by_user)
    members = []
    for user in users[: max(0, limit)]:
        group = by_user[user]
        newest = max(group, key=lambda entry: (entry.ts, entry.conn))
        status = combine_statuses(entry.status for entry in group)
        members.append(Member(user, newest.name, newest.info, len(group), status))
    return Presence(members, len(users))


def create_presence_store(url: str, options: PresenceOptions) -> PresenceStore:
    """Pick the store by the broker URL: ``memory://`` or ``redis://host:port/db?prefix=...``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from realtime.presence_memory import MemoryPresenceStore

        return MemoryPresenceStore(options)
    if scheme in ("redis", "rediss"):
        from realtime.presence_redis import RedisPresenceStore  # needs the 'redis' extra

        return RedisPresenceStore(url, options)
    raise ValueError(f"unsupported presence URL scheme {scheme!r}; use memory:// or redis://")
