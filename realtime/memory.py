"""MemoryBroker: the single-node default. Real, not a test double."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from realtime.broker import (
    BrokerOptions,
    History,
    Publication,
    PublicationHandler,
    PublishResult,
    Retention,
    StreamPosition,
    UnrecoverablePosition,
)

log = logging.getLogger(__name__)

# Publications waiting for this node's handler. Bounded: a publisher faster than delivery
# waits here instead of growing memory without limit.
_DISPATCH_QUEUE_SIZE = 10_000
_SWEEP_INTERVAL = 30.0


def new_epoch() -> str:
    return secrets.token_hex(4)


# A retained publication: (monotonic time, event, data, offset, ts), rebuilt into a Publication
# only when history is read. A node retains hundreds of thousands of them and every full pass of
# the cyclic garbage collector walks each tracked object: this is one tracked object per
# publication (the tuple; it holds the data dict, so it stays tracked) where a Publication in a
# tuple plus a PublishResult in an idempotency tuple were four, and the idempotency entries are
# now plain (expiry, offset) tuples, which the collector stops tracking.
_Retained = tuple[float, str, Any, int, float]


@dataclass(slots=True)
class _Stream:
    epoch: str
    retention: Retention
    top: int = 0
    retained: deque[_Retained] = field(default_factory=deque)
    last_publish: float = 0.0
    # idempotency key -> (expiry, offset); plain tuples too.
    dedupe: dict[str, tuple[float, int]] = field(default_factory=dict)

    def publications(self, channel: str, newest: int) -> list[Publication]:
        """The ``newest`` retained publications, oldest first (built only for those asked)."""
        tail = itertools.islice(self.retained, len(self.retained) - newest, None)
        return [
            Publication(channel, event, data, offset, self.epoch, ts)
            for _, event, data, offset, ts in tail
        ]


class MemoryBroker:
    """Per-channel counters and bounded deques in this process."""

    def __init__(self, options: BrokerOptions, handler: PublicationHandler) -> None:
        self._options = options
        self._handler = handler
        self._streams: dict[str, _Stream] = {}
        self._subscribed: set[str] = set()
        self._queue: asyncio.Queue[Publication] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self._queue = asyncio.Queue(_DISPATCH_QUEUE_SIZE)
        self._tasks = [
            asyncio.create_task(self._dispatch_forever(self._queue), name="memory-broker-dispatch"),
            asyncio.create_task(self._sweep_forever(), name="memory-broker-sweep"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._queue = None

    async def publish(
        self, channel: str, event: str, data: Any, *, idempotency_key: str | None = None
    ) -> PublishResult:
        queue = self._require_running()
        now = time.monotonic()
        stream = self._stream(channel, now)
        if idempotency_key is not None:
            seen = stream.dedupe.get(idempotency_key)
            if seen is not None and seen[0] > now:
                return PublishResult(seen[1], stream.epoch, duplicate=True)
        # Offset assignment and append happen without an await: this is the serialization
        # point that makes offsets strictly increase per channel.
        stream.top += 1
        pub = Publication(channel, event, data, stream.top, stream.epoch, time.time())
        stream.retained.append((now, event, data, pub.offset, pub.ts))
        stream.last_publish = now
        self._trim(stream, now)
        if idempotency_key is not None:
            stream.dedupe[idempotency_key] = (now + self._options.idempotency_ttl, pub.offset)
        if channel in self._subscribed:
            await queue.put(pub)
        return PublishResult(pub.offset, pub.epoch)

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> History:
        now = time.monotonic()
        stream = self._stream(channel, now)
        self._trim(stream, now)
        position = StreamPosition(stream.epoch, stream.top)
        retained = stream.retained
        if since is None:
            count = len(retained) if limit is None else max(0, min(limit, len(retained)))
            return History(stream.publications(channel, count), position)
        if not stream.retention.recovery:
            raise UnrecoverablePosition(f"recovery is off on {channel}")
        if since.epoch != stream.epoch or since.offset > stream.top:
            raise UnrecoverablePosition(
                f"position {since.epoch}/{since.offset} is not in stream {stream.epoch}"
            )
        missed = stream.top - since.offset
        oldest = retained[0][3] if retained else stream.top + 1
        if missed and oldest > since.offset + 1:
            raise UnrecoverablePosition(f"publications after offset {since.offset} have expired")
        if limit is not None and missed > limit:
            raise UnrecoverablePosition(f"{missed} publications missed; the limit is {limit}")
        return History(stream.publications(channel, missed), position)

    async def ping(self) -> None:
        self._require_running()

    def _require_running(self) -> asyncio.Queue[Publication]:
        if self._queue is None:
            raise RuntimeError("MemoryBroker is not running: use `async with broker:`")
        return self._queue

    def _stream(self, channel: str, now: float) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            retention = self._options.retention_of(channel)
            stream = self._streams[channel] = _Stream(new_epoch(), retention, last_publish=now)
        return stream

    def _trim(self, stream: _Stream, now: float) -> None:
        retained, retention = stream.retained, stream.retention
        while len(retained) > retention.size:
            retained.popleft()
        horizon = now - retention.ttl
        while retained and retained[0][0] < horizon:
            retained.popleft()

    async def _dispatch_forever(self, queue: asyncio.Queue[Publication]) -> None:
        while True:
            pub = await queue.get()
            try:
                await self._handler(pub)
            except Exception:
                # One failing delivery must not stop every later one.
                log.exception("publication handler failed for %s#%d", pub.channel, pub.offset)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Forget expired idempotency keys and streams idle past their meta TTL."""
        for channel, stream in list(self._streams.items()):
            self._trim(stream, now)
            stream.dedupe = {k: v for k, v in stream.dedupe.items() if v[0] > now}
            idle = now - stream.last_publish
            if idle > self._options.stream_meta_ttl and channel not in self._subscribed:
                del self._streams[channel]
