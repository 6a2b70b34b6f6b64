"""Channel names and namespaces: the one place they are built and parsed.

A channel is ``<namespace>:<id>``. Each namespace has a policy (who may subscribe, whether
clients may publish, presence, history, recovery, latest-value event types, a payload limit).
The namespaces are configuration: the built-in ones (``ChannelKind``) and whatever an operator
declares, loaded once at startup (``server.namespaces``) into a ``Namespaces`` registry that is
passed down. Authorization itself needs the caller's identity and lives in the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import InvalidPayload, UnknownChannel
from realtime.broker import Retention

MAX_CHANNEL_LENGTH = 160
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,127}")
NAMESPACE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class ChannelKind(StrEnum):
    """The built-in namespaces. Their names carry server-side behaviour beyond their policy
    (a job's owner, a document's roles, the state a subscriber gets), which a namespace of
    another name never has."""

    JOB = "job"
    USER = "user"
    FLIGHT = "flight"
    AIRPORT = "airport"
    DOC = "doc"
    ROOM = "room"
    # Operators' channels (``admin:stats``): the admin scope only, never a grant.
    ADMIN = "admin"


class Access(StrEnum):
    """Who may subscribe (an explicit grant or the admin scope always may, but for ADMIN)."""

    GRANT = "grant"  # only with a grant in the token
    OWNER = "owner"  # the channel's owner: the user whose id it is (a job's: its owner)
    ANY = "any"  # any authenticated user
    MEMBER = "member"  # the doc namespace's own: the document's members
    ADMIN = "admin"  # the admin namespace's own: the admin scope only, a grant is not enough


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    subscribe: Access
    client_publish: bool
    presence: bool
    history_size: int
    history_ttl_s: float
    recovery: bool
    latest_value: frozenset[str]
    max_payload_bytes: int

    @property
    def retention(self) -> Retention:
        return Retention(self.history_size, self.history_ttl_s, self.recovery)


class InvalidChannel(InvalidPayload):
    """The name is not ``<namespace>:<id>`` with a valid id."""


class UnknownNamespace(UnknownChannel):
    """The name is well formed but its namespace is not configured."""


@dataclass(frozen=True, slots=True)
class Channel:
    namespace: Namespace
    id: str

    def __str__(self) -> str:
        return f"{self.namespace.name}:{self.id}"

    @property
    def kind(self) -> str:
        """The namespace's name (compare with ``ChannelKind`` for the built-in ones)."""
        return self.namespace.name

    @property
    def policy(self) -> Namespace:
        return self.namespace


class Namespaces:
    """The configured namespaces, in declaration order (the built-in ones first)."""

    def __init__(self, namespaces: Iterable[Namespace]) -> None:
        self._by_name = {namespace.name: namespace for namespace in namespaces}
        missing = [kind.value for kind in ChannelKind if kind.value not in self._by_name]
        if missing:
            raise ValueError(f"the built-in namespaces {missing} are not defined")
        self._known = ", ".join(self._by_name)
        self._retention = {name: ns.retention for name, ns in self._by_name.items()}

    def __iter__(self) -> Iterator[Namespace]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> Namespace:
        return self._by_name[name]

    def parse(self, name: object) -> Channel:
        """Parse ``name`` into a Channel, or raise InvalidChannel or UnknownNamespace saying
        what is wrong (as ``invalid_payload`` and ``unknown_channel``)."""
        if not isinstance(name, str):
            raise InvalidChannel("channel must be a string like 'job:42'")
        if len(name) > MAX_CHANNEL_LENGTH:
            raise InvalidChannel(f"channel name is longer than {MAX_CHANNEL_LENGTH} characters")
        kind, sep, ident = name.partition(":")
        if not sep or not kind:
            raise InvalidChannel(f"channel {name!r} has no kind; use '<kind>:<id>', e.g. 'job:42'")
        namespace = self._by_name.get(kind)
        if namespace is None:
            raise UnknownNamespace(f"unknown channel kind {kind!r}; known kinds: {self._known}")
        return Channel(namespace, check_id(ident))

    def of(self, channel: str) -> Namespace | None:
        """The namespace of an already valid channel name (None if it has none)."""
        return self._by_name.get(channel.partition(":")[0])

    def retention(self, channel: str) -> Retention | None:
        """How ``channel``'s history is kept (for the broker); None: the broker's default."""
        return self._retention.get(channel.partition(":")[0])

    def latest_value(self, channel: str) -> frozenset[str]:
        namespace = self.of(channel)
        return frozenset() if namespace is None else namespace.latest_value


def check_id(ident: str) -> str:
    """``ident`` if it is a valid channel id, else InvalidChannel."""
    if not _ID.fullmatch(ident):
        raise InvalidChannel(
            f"invalid channel id {ident!r}: 1-128 characters of letters, digits and _.@=+-"
        )
    return ident


def channel_name(namespace: str, ident: str) -> str:
    return f"{namespace}:{ident}"


def job_channel(job_id: str) -> str:
    return channel_name(ChannelKind.JOB, job_id)


def user_channel(user_id: str) -> str:
    return channel_name(ChannelKind.USER, user_id)


def flight_channel(flight_id: str) -> str:
    return channel_name(ChannelKind.FLIGHT, flight_id)


def doc_channel(doc_id: str) -> str:
    return channel_name(ChannelKind.DOC, doc_id)


def room_channel(name: str) -> str:
    return channel_name(ChannelKind.ROOM, name)


def grant_matches(grant: str, channel: str) -> bool:
    """An explicit grant is an exact channel name, or a prefix ending in ``*`` (``job:*``)."""
    if grant.endswith("*"):
        prefix = grant[:-1]
        # A bare "*" is not a grant: "all channels" is the admin scope, stated explicitly.
        return bool(prefix) and channel.startswith(prefix)
    return grant == channel
