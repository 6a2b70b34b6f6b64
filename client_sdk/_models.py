"""Values the SDK hands to its users, parsed from the wire."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple


class Position(NamedTuple):
    """A point in a channel's stream: the epoch and the offset of a publication."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Message:
    """One publication on a channel.

    Attributes:
        channel: The channel name, for example ``"room:lobby"``.
        type: The event type, for example ``"chat.message"``.
        offset: Its offset; strictly increasing within an epoch.
        epoch: The stream epoch; a new epoch means the stream was reset.
        ts: Server timestamp (seconds since the Unix epoch).
        data: The event payload.
        latest: A latest-value event (progress, position): when this client lagged, the
            server may have skipped older events of this type on this channel, so its offset
            can jump.
    """

    channel: str
    type: str
    offset: int
    epoch: str
    ts: float
    data: Any
    latest: bool = False

    @property
    def position(self) -> Position:
        """The stream position of this publication."""
        return Position(self.epoch, self.offset)

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> Message:
        """Parse a wire envelope ``{channel, type, offset, epoch, ts, data}``.

        Raises:
            ValueError: If a field is missing or has the wrong type.
        """
        try:
            return cls(
                channel=str(envelope["channel"]),
                type=str(envelope["type"]),
                offset=_int(envelope["offset"]),
                epoch=str(envelope["epoch"]),
                ts=float(envelope["ts"]),
                data=envelope.get("data"),
                latest=envelope.get("latest") is True,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed envelope: {envelope!r}") from exc


@dataclass(frozen=True, slots=True)
class Resync:
    """The stream could not be replayed: continue from ``state`` at this position.

    Yielded by a subscription instead of the missed publications when they are no longer in
    the channel's history (or the local queue overflowed). Publications after it follow on.

    Attributes:
        channel: The channel name.
        epoch: The stream epoch from now on.
        offset: The offset the state corresponds to; publications after it follow.
        state: The channel's current state (``None`` for channels without state).
    """

    channel: str
    epoch: str
    offset: int
    state: Any

    @property
    def position(self) -> Position:
        """The stream position this resync starts from."""
        return Position(self.epoch, self.offset)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The outcome of a publish.

    Attributes:
        offset: The publication's offset in the channel.
        epoch: The channel's stream epoch.
        duplicate: True when the idempotency key was seen before; offset is the original one.
    """

    offset: int
    epoch: str
    duplicate: bool

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> PublishResult:
        """Parse ``{offset, epoch, duplicate}``."""
        return cls(_int(body["offset"]), str(body["epoch"]), bool(body.get("duplicate", False)))


@dataclass(frozen=True, slots=True)
class Member:
    """One user on a channel, however many connections (tabs) they have there.

    ``status`` is the user's status across the cluster: ``"busy"`` if any of their connections
    says so, else ``"online"`` if any is active, else ``"away"``.
    """

    user: str
    name: str | None
    info: Any
    connections: int
    status: str = "online"


@dataclass(frozen=True, slots=True)
class Presence:
    """At most the server's cap of members (ordered by user id), and how many there are."""

    channel: str
    members: list[Member]
    total: int

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Presence:
        """Parse ``{channel, members: [{user, name, status, info, connections}], total}``."""
        members = [
            Member(
                str(m["user"]),
                m.get("name"),
                m.get("info"),
                _int(m["connections"]),
                str(m.get("status", "online")),
            )
            for m in body["members"]
        ]
        return cls(str(body["channel"]), members, _int(body["total"]))


@dataclass(frozen=True, slots=True)
class History:
    """Retained publications of a channel, oldest first.

    Attributes:
        channel: The channel name.
        epoch: The stream epoch.
        offset: The stream's latest offset.
        publications: The publications, in offset order.
    """

    channel: str
    epoch: str
    offset: int
    publications: list[Message]


@dataclass(frozen=True, slots=True)
class Token:
    """A minted user token.

    Attributes:
        token: The JWT to pass to `Client`.
        expires_at: Expiry, in seconds since the Unix epoch.
    """

    token: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A ``server.notice``: why the server is about to close the connection (or, with
    ``channel``, ended that subscription).

    Attributes:
        code: An error code such as ``"token_expired"``, ``"shutdown"`` or ``"slow"``.
        message: A human-readable explanation.
        reconnect: Whether the client should reconnect.
        retry_after_ms: How long to wait before reconnecting, in milliseconds.
        channel: Set when the notice ends one subscription (``unsubscribed_by_admin``), not
            the connection.
    """

    code: str
    message: str
    reconnect: bool
    retry_after_ms: int
    channel: str | None = None

    @classmethod
    def from_wire(cls, body: object) -> Notice:
        """Parse a notice leniently (a malformed one still means "reconnect")."""
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        retry_after = fields.get("retry_after_ms")
        return cls(
            code=str(fields.get("code") or "unknown"),
            message=str(fields.get("message") or ""),
            reconnect=fields.get("reconnect") is not False,
            retry_after_ms=retry_after if isinstance(retry_after, int) and retry_after > 0 else 0,
            channel=channel if isinstance(channel := fields.get("channel"), str) else None,
        )


def _int(value: object) -> int:
    # bool is an int subclass; an offset of True is a protocol error, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def optional_datetime(value: Any) -> datetime | None:
    """An ISO 8601 moment of a snapshot, or None."""
    return None if value is None else datetime.fromisoformat(value)


def bare_doc_id(doc: str) -> str:
    """A document id without the channel-style ``doc:`` prefix (both mean the same)."""
    return doc.removeprefix("doc:")
