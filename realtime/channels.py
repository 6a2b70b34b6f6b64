"""Channel names: the one place they are built and parsed.

A channel is ``<kind>:<id>``. Each kind has a fixed policy (who may publish from a client,
whether it carries presence, whether subscribing returns state); authorization itself needs
the caller's identity and lives in the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_CHANNEL_LENGTH = 160
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,127}")


class ChannelKind(StrEnum):
    JOB = "job"
    USER = "user"
    FLIGHT = "flight"
    AIRPORT = "airport"
    DOC = "doc"
    ROOM = "room"
    # Operators' channels (``admin:stats``): the admin scope only, never a grant.
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class KindPolicy:
    client_publish: bool
    presence: bool
    stateful: bool


POLICIES: dict[ChannelKind, KindPolicy] = {
    ChannelKind.JOB: KindPolicy(client_publish=False, presence=False, stateful=True),
    ChannelKind.USER: KindPolicy(client_publish=False, presence=True, stateful=True),
    ChannelKind.FLIGHT: KindPolicy(client_publish=False, presence=False, stateful=True),
    # An airport's departures: flight.updated of every flight leaving it (no state; the list
    # is GET /api/flights?origin=..., the channel's history covers a reconnect).
    ChannelKind.AIRPORT: KindPolicy(client_publish=False, presence=False, stateful=False),
    ChannelKind.DOC: KindPolicy(client_publish=True, presence=True, stateful=False),
    ChannelKind.ROOM: KindPolicy(client_publish=True, presence=True, stateful=False),
    ChannelKind.ADMIN: KindPolicy(client_publish=False, presence=False, stateful=False),
}


class InvalidChannel(ValueError):
    """The name is not ``<kind>:<id>`` with a known kind and a valid id."""

    def __init__(self, message: str, *, unknown_kind: bool = False) -> None:
        super().__init__(message)
        self.unknown_kind = unknown_kind


@dataclass(frozen=True, slots=True)
class Channel:
    kind: ChannelKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"

    @property
    def policy(self) -> KindPolicy:
        return POLICIES[self.kind]


def parse_channel(name: object) -> Channel:
    """Parse ``name`` into a Channel, or raise InvalidChannel saying what is wrong."""
    if not isinstance(name, str):
        raise InvalidChannel("channel must be a string like 'job:42'")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(f"channel name is longer than {MAX_CHANNEL_LENGTH} characters")
    kind, sep, ident = name.partition(":")
    if not sep or not kind:
        raise InvalidChannel(f"channel {name!r} has no kind; use '<kind>:<id>', e.g. 'job:42'")
    try:
        channel_kind = ChannelKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ChannelKind)
        raise InvalidChannel(
            f"unknown channel kind {kind!r}; known kinds: {known}", unknown_kind=True
        ) from None
    if not _ID.fullmatch(ident):
        raise InvalidChannel(
            f"invalid channel id {ident!r}: 1-128 characters of letters, digits and _.@=+-"
        )
    return Channel(channel_kind, ident)


def job_channel(job_id: str) -> str:
    return f"{ChannelKind.JOB.value}:{job_id}"


def user_channel(user_id: str) -> str:
    return f"{ChannelKind.USER.value}:{user_id}"


def flight_channel(flight_id: str) -> str:
    return f"{ChannelKind.FLIGHT.value}:{flight_id}"


def doc_channel(doc_id: str) -> str:
    return f"{ChannelKind.DOC.value}:{doc_id}"


def room_channel(name: str) -> str:
    return f"{ChannelKind.ROOM.value}:{name}"


def grant_matches(grant: str, channel: str) -> bool:
    """An explicit grant is an exact channel name, or a prefix ending in ``*`` (``job:*``)."""
    if grant.endswith("*"):
        prefix = grant[:-1]
        # A bare "*" is not a grant: "all channels" is the admin scope, stated explicitly.
        return bool(prefix) and channel.startswith(prefix)
    return grant == channel
