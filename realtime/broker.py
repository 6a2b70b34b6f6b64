"""The Broker seam: ordered, recoverable publication streams shared by all nodes.

Implementations: ``MemoryBroker`` (the single-node default) and, for several nodes, a Redis
broker. Both are run against one contract suite (tests/realtime/test_broker_contract.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a subscriber is in a channel's stream: the epoch names the stream's lifetime."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Publication:
    """One message on a channel, as every subscriber sees it."""

    channel: str
    event: str
    data: Any
    offset: int
    epoch: str
    ts: float

    def envelope(self) -> dict[str, Any]:
        """What a client receives: ``{channel, type, offset, epoch, ts, data}``."""
        return {
            "channel": self.channel,
            "type": self.event,
            "offset": self.offset,
            "epoch": self.epoch,
            "ts": self.ts,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class PublishResult:
    offset: int
    epoch: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """Publications in offset order, and the stream's top position when they were read."""

    publications: list[Publication]
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class Retention:
    """How a channel's history is kept: at most ``size`` publications for ``ttl`` seconds, and
    whether a subscriber may recover from a position (``history(since=...)``)."""

    size: int
    ttl: float
    recovery: bool = True


@dataclass(frozen=True, slots=True)
class BrokerOptions:
    # The retention of channels that ``retention`` does not name (or of all, without it).
    history_size: int = 300
    history_ttl: float = 300.0
    idempotency_ttl: float = 300.0
    # How long a channel's epoch and offset counter outlive its last publication.
    stream_meta_ttl: float = 86_400.0
    node_id: str = field(default="")
    # Each channel's retention (its namespace's), or None for the default.
    retention: Callable[[str], Retention | None] | None = None

    def retention_of(self, channel: str) -> Retention:
        retention = self.retention(channel) if self.retention is not None else None
        return retention or Retention(self.history_size, self.history_ttl)


class UnrecoverablePosition(Exception):
    """The publications after the requested position are no longer all retained."""


class BrokerUnavailable(Exception):
    """The broker cannot be reached right now; the caller may retry."""


PublicationHandler = Callable[[Publication], Awaitable[None]]
# Called with a channel whose stream this node could not continue (lost or expired while the
# node was cut off): its subscribers must resynchronize.
ResetHandler = Callable[[str], Awaitable[None]]


class Broker(Protocol):
    """Ordered per-channel streams with bounded history, shared by every node.

    Use it as ``async with broker:``; nothing connects before ``__aenter__``.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(
        self, channel: str, event: str, data: Any, *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Append to ``channel``'s stream and deliver to every node subscribed to it.

        Offsets are assigned at one serialization point per channel and strictly increase
        within an epoch. A repeated ``idempotency_key`` on the same channel within the
        idempotency window publishes nothing and returns the original offset with
        ``duplicate=True``. Never delivers to the caller directly: this node's handler is
        called from the broker's own listener, as on every other node.

        Raises:
            BrokerUnavailable: nothing was published; retry later.
        """
        ...

    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel``'s publications to this node's handler (idempotent)."""
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` to this node (idempotent)."""
        ...

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> History:
        """Retained publications, oldest first, and the current top position.

        Without ``since``: the ``limit`` most recent (all retained when None, none when 0).
        With ``since``: every publication after it. This never returns a partial answer.
        What is retained, and whether ``since`` is honoured at all, is the channel's
        ``Retention`` (``BrokerOptions.retention_of``).

        Raises:
            UnrecoverablePosition: ``since`` is from another epoch, is ahead of the stream,
                or some publication after it has left the history (or there are more than
                ``limit`` of them), or the channel's retention has recovery off.
            BrokerUnavailable: retry later.
        """
        ...

    async def ping(self) -> None:
        """Return when the broker is reachable; raise BrokerUnavailable otherwise."""
        ...


def create_broker(
    url: str,
    options: BrokerOptions,
    handler: PublicationHandler,
    *,
    on_reset: ResetHandler | None = None,
) -> Broker:
    """Pick the broker by URL: ``memory://`` or ``redis://host:port/db?prefix=tandem:``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from realtime.memory import MemoryBroker

        return MemoryBroker(options, handler)
    if scheme in ("redis", "rediss"):
        from realtime.redis import RedisBroker  # needs the 'redis' extra

        return RedisBroker(url, options, handler, on_reset=on_reset)
    raise ValueError(f"unsupported broker URL scheme {scheme!r}; use memory:// or redis://")
