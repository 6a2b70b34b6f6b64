"""The Hub: which local connections listen on which channel, and the race-free join.

The hub holds this node's interest in channels. The first local subscriber makes the node
subscribe in the broker, the last one leaving unsubscribes it. A subscriber joins in two
steps so that nothing published while it reads history is lost or doubled: ``begin`` makes the
node listen and buffers what arrives for that subscriber, ``commit`` hands back what the
history read did not have and makes the subscriber live, in one synchronous step. The history
can also be *ahead* of this node's deliveries (a publication already in the stream while its
live copy is still on its way to this node): live copies at or below the position the
subscriber was given are then not delivered to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection

from realtime.broker import Broker, Publication, StreamPosition

log = logging.getLogger(__name__)

Deliver = Callable[[Publication, Collection[str]], Awaitable[None]]
# Told which local connections must resynchronize a channel whose stream could not be continued.
Resync = Callable[[str, Collection[str]], Awaitable[None]]
# Told (channel, True) when a channel gets its first local connection, (channel, False) when
# it loses its last; called synchronously where that happens, so the calls alternate.
Occupancy = Callable[[str, bool], None]

# Publications buffered for one joining subscriber; a join that would need more is retried by
# the client from its position instead of buffering without bound.
MAX_JOIN_BUFFER = 10_000


class JoinOverflow(Exception):
    """Too much was published while a subscriber was joining."""


class Hub:
    def __init__(self, deliver: Deliver) -> None:
        self._broker: Broker | None = None
        self._deliver = deliver
        # Set by the owner of the connections; without it a broken stream is only logged.
        self.resync: Resync | None = None
        self.on_occupancy: Occupancy | None = None
        self._live: dict[str, set[str]] = defaultdict(set)
        self._joining: dict[str, dict[str, list[Publication] | None]] = defaultdict(dict)
        self._by_conn: dict[str, set[str]] = defaultdict(set)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # The last publication delivered on each channel, and per channel the subscribers
        # that were given a position beyond it (live copies up to it are skipped for them).
        self._last: dict[str, StreamPosition] = {}
        self._ahead: dict[str, dict[str, StreamPosition]] = {}

    def use(self, broker: Broker) -> None:
        """Listen through ``broker``, whose handler is this hub's ``on_publication``."""
        self._broker = broker

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("Hub has no broker: call hub.use(broker) first")
        return self._broker

    async def on_publication(self, pub: Publication) -> None:
        """The broker's handler: buffer for joining subscribers, deliver to live ones."""
        joining = self._joining.get(pub.channel)
        if joining:
            for conn, buffer in joining.items():
                if buffer is None:
                    continue
                if len(buffer) >= MAX_JOIN_BUFFER:
                    joining[conn] = None  # commit() reports the overflow
                else:
                    buffer.append(pub)
        self._last[pub.channel] = StreamPosition(pub.epoch, pub.offset)
        live = self._live.get(pub.channel)
        if not live:
            return
        ahead = self._ahead.get(pub.channel)
        if ahead:
            live = self._catching_up(pub, live, ahead)
        if live:
            await self._deliver(pub, live)

    def _catching_up(
        self, pub: Publication, live: set[str], ahead: dict[str, StreamPosition]
    ) -> set[str]:
        """``live`` without the subscribers whose position already holds ``pub``."""
        held = set()
        for conn, position in list(ahead.items()):
            if position.epoch == pub.epoch and pub.offset <= position.offset:
                held.add(conn)
            else:
                del ahead[conn]  # caught up (or the stream started over: no longer ahead)
        if not ahead:
            del self._ahead[pub.channel]
        return live - held if held else live

    async def on_reset(self, channel: str) -> None:
        """The broker's reset handler: every local subscriber of ``channel`` must resync."""
        conns = set(self._live.get(channel, ())) | set(self._joining.get(channel, ()))
        if not conns:
            return
        if self.resync is None:
            log.warning("stream of %s broke and nobody resyncs its subscribers", channel)
            return
        await self.resync(channel, conns)

    async def begin(self, conn: str, channel: str) -> None:
        """Start listening on ``channel`` for ``conn`` and buffer what arrives for it."""
        self._leave_local(conn, channel)
        self._joining[channel][conn] = []
        self._by_conn[conn].add(channel)
        if self.on_occupancy is not None and self.connection_count(channel) == 1:
            self.on_occupancy(channel, True)
        try:
            await self._ensure_subscribed(channel)
        except BaseException:
            await self.leave(conn, channel)
            raise

    def commit(
        self, conn: str, channel: str, position: StreamPosition
    ) -> tuple[list[Publication], StreamPosition]:
        """Make ``conn`` live on ``channel``; ``position`` is where the history it read ends.
        Returns what arrived since ``begin`` after that position, and the position after it.

        Synchronous on purpose: no publication can slip between the buffer and live delivery.
        """
        buffer = self._joining[channel].pop(conn, None)
        if buffer is None:
            raise JoinOverflow(f"more than {MAX_JOIN_BUFFER} publications while joining")
        newer = []
        for pub in buffer:
            if pub.epoch == position.epoch and pub.offset > position.offset:
                newer.append(pub)
                position = StreamPosition(pub.epoch, pub.offset)
        self._live[channel].add(conn)
        last = self._last.get(channel)
        if last is None or last.epoch != position.epoch or last.offset < position.offset:
            self._ahead.setdefault(channel, {})[conn] = position
        return newer, position

    async def leave(self, conn: str, channel: str) -> None:
        self._leave_local(conn, channel)
        self._by_conn[conn].discard(channel)
        if not self._by_conn[conn]:
            del self._by_conn[conn]
        await self._release(channel)

    async def leave_all(self, conn: str) -> None:
        for channel in list(self._by_conn.get(conn, ())):
            await self.leave(conn, channel)

    def channels_of(self, conn: str) -> frozenset[str]:
        return frozenset(self._by_conn.get(conn, ()))

    def is_subscribed(self, conn: str, channel: str) -> bool:
        return channel in self._by_conn.get(conn, ())

    def connection_count(self, channel: str) -> int:
        return len(self._live.get(channel, ())) + len(self._joining.get(channel, ()))

    @property
    def channel_count(self) -> int:
        return len(self._live.keys() | self._joining.keys())

    def _leave_local(self, conn: str, channel: str) -> None:
        before = self.connection_count(channel)
        self._drop_local(conn, channel)
        if self.on_occupancy is not None and before and not self.connection_count(channel):
            self.on_occupancy(channel, False)

    def _drop_local(self, conn: str, channel: str) -> None:
        ahead = self._ahead.get(channel)
        if ahead is not None:
            ahead.pop(conn, None)
            if not ahead:
                del self._ahead[channel]
        live = self._live.get(channel)
        if live is not None:
            live.discard(conn)
            if not live:
                del self._live[channel]
        joining = self._joining.get(channel)
        if joining is not None:
            joining.pop(conn, None)
            if not joining:
                del self._joining[channel]

    async def _ensure_subscribed(self, channel: str) -> None:
        async with self._locks[channel]:
            await self.broker.subscribe(channel)

    async def _release(self, channel: str) -> None:
        async with self._locks[channel]:
            # Someone may have joined while we waited for the lock.
            if self.connection_count(channel) == 0:
                await self.broker.unsubscribe(channel)
                self._locks.pop(channel, None)
                self._last.pop(channel, None)
