"""The DocBus seam: raw Yjs traffic between the nodes that hold the same document open.

Implementations: ``MemoryDocBus`` (one node, or several in one process sharing a
``MemoryExchange``) and ``RedisDocBus`` (a pub/sub channel per document). Both run against
one contract suite (tests/realtime/test_doc_bus_contract.py).

Delivery is at most once and unordered across publishers: a lost message is healed by the
state-vector exchange the engine runs on load, periodically and after ``on_reconnect``. Yjs
updates are idempotent and commutative, so nothing here needs offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import urlsplit

import msgpack

log = logging.getLogger(__name__)


class BusKind(IntEnum):
    UPDATE = 1  # payload: a Yjs update
    AWARENESS = 2  # payload: an awareness update
    SV_REQUEST = 3  # payload: the sender's state vector; peers answer UPDATE + SV_REPLY
    SV_REPLY = 4  # payload: the sender's state vector; the requester answers UPDATE
    ALIVE = 5  # payload: msgpack list of awareness client ids the sender's clients hold
    ACCESS = 6  # payload: msgpack {user, role}: user None: the document was deleted


@dataclass(frozen=True, slots=True)
class BusMessage:
    kind: BusKind
    doc_id: str
    node: str
    epoch: str
    payload: bytes

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb([int(self.kind), self.node, self.epoch, self.payload])
        return packed

    @classmethod
    def decode(cls, doc_id: str, raw: bytes) -> BusMessage:
        """Raises ValueError for anything that is not a message of this format."""
        try:
            kind, node, epoch, payload = msgpack.unpackb(raw)
            message = cls(BusKind(kind), doc_id, node, epoch, payload)
        except Exception as exc:
            raise ValueError(f"not a document bus message: {exc}") from None
        if not (isinstance(node, str) and isinstance(epoch, str) and isinstance(payload, bytes)):
            raise ValueError("not a document bus message: wrong field types")
        return message


MessageHandler = Callable[[BusMessage], Awaitable[None]]
ReconnectHandler = Callable[[], Awaitable[None]]


class BusUnavailable(Exception):
    """The bus cannot be reached right now."""


class DocBus(Protocol):
    """Moves messages between the nodes subscribed to a document.

    Use it as ``async with bus:``. A node never receives its own messages (echoes are
    dropped by node id). ``on_reconnect`` (given at construction) is awaited whenever the bus
    connection came back after a loss, since messages may have been missed meanwhile.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(self, message: BusMessage) -> None:
        """Deliver to every other node subscribed to ``message.doc_id``, at most once.

        Raises:
            BusUnavailable: not sent.
        """
        ...

    async def subscribe(self, doc_id: str) -> None:
        """Receive ``doc_id``'s messages from now on (idempotent). Returns once messages
        published after it are sure to arrive."""
        ...

    async def unsubscribe(self, doc_id: str) -> None: ...

    async def peers(self, doc_id: str) -> int:
        """How many other nodes are subscribed to ``doc_id`` (0 when unknown)."""
        ...


def create_doc_bus(
    url: str,
    node_id: str,
    on_message: MessageHandler,
    on_reconnect: ReconnectHandler,
) -> DocBus:
    """The bus that goes with the broker URL: ``memory://`` or ``redis://...``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryDocBus(node_id, on_message)
    if scheme in ("redis", "rediss"):
        from realtime.collab.redis_bus import RedisDocBus  # needs the 'redis' extra

        return RedisDocBus(url, node_id, on_message, on_reconnect)
    raise ValueError(f"unsupported broker URL scheme {scheme!r}; use memory:// or redis://")


class MemoryExchange:
    """Where the memory buses of one process meet (one node has a private one)."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryDocBus]] = defaultdict(set)


# A bus that falls this far behind drops messages, as a Redis subscriber would.
_MAX_QUEUED = 10_000


class MemoryDocBus:
    """The single-node default (real, not a test double); buses sharing an exchange behave
    like nodes sharing Redis, which the engine's tests use to run several nodes in one
    process."""

    def __init__(
        self, node_id: str, on_message: MessageHandler, exchange: MemoryExchange | None = None
    ) -> None:
        self.node_id = node_id
        self._on_message = on_message
        self._exchange = exchange or MemoryExchange()
        self._queue: asyncio.Queue[BusMessage] = asyncio.Queue(_MAX_QUEUED)
        self._worker: asyncio.Task[None] | None = None
        self.dropped = 0

    async def __aenter__(self) -> Self:
        self._worker = asyncio.create_task(self._deliver(), name=f"doc-bus-{self.node_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for subscribers in self._exchange.subscribers.values():
            subscribers.discard(self)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def publish(self, message: BusMessage) -> None:
        if self._worker is None:
            raise BusUnavailable("the bus is not running: use `async with bus:`")
        for bus in self._exchange.subscribers.get(message.doc_id, ()):
            if bus is not self:
                bus._enqueue(message)

    async def subscribe(self, doc_id: str) -> None:
        self._exchange.subscribers[doc_id].add(self)

    async def unsubscribe(self, doc_id: str) -> None:
        subscribers = self._exchange.subscribers.get(doc_id)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self._exchange.subscribers[doc_id]

    async def peers(self, doc_id: str) -> int:
        return len(self._exchange.subscribers.get(doc_id, set()) - {self})

    def _enqueue(self, message: BusMessage) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _deliver(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._on_message(message)
            except Exception:
                log.exception("document bus handler failed for %s", message.doc_id)
