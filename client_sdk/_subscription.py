"""One channel subscription: ordering, dedupe, gap repair and a bounded queue."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

from client_sdk._errors import ConnectionLost, TandemError
from client_sdk._models import Message, Position, Resync

log = logging.getLogger("client_sdk")

Item = Message | Resync
# Re-subscribes in a row that failed to fill a gap before giving up on replay (see _on_message).
MAX_GAP_REPAIRS = 3


class _Owner(Protocol):
    async def _start_subscription(self, sub: Subscription) -> None: ...

    async def _stop_subscription(self, sub: Subscription) -> None: ...

    def _schedule_sync(self, sub: Subscription) -> None: ...


class Subscription:
    """A subscription to one channel; use it as an async context manager and iterate it.

    Iterating yields `Message` items in offset order, exactly once each, across reconnects.
    When missed publications cannot be replayed, a `Resync` item carries the channel's current
    state instead, and the stream continues after it.

    Attributes:
        channel: The channel name.
        state: The channel state from the latest (re)subscribe (``None`` for stateless kinds).
        recovered: False when the latest (re)subscribe could not replay what was missed (a
            `Resync` was queued); True otherwise.
    """

    def __init__(
        self,
        owner: _Owner,
        channel: str,
        *,
        since: Position | None,
        max_queue: int,
        presence: bool = False,
    ) -> None:
        self.channel = channel
        self.presence = presence
        self.state: Any = None
        self.recovered = True
        self._owner = owner
        self._since = since
        self._consumed: Position | None = since
        self._max_queue = max_queue
        self._queue: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        # Last position accepted into the queue: what dedupe, gap checks and re-subscribes use.
        self._tail: Position | None = since
        self._pending: list[Message] = []
        self._syncing = False
        self._needs_sync = False
        self._reset = False
        self._repairs = 0
        self._ready: asyncio.Future[None] | None = None
        self._done = False
        self._stopped = False
        self._error: TandemError | None = None

    @property
    def epoch(self) -> str | None:
        """Epoch of the last item yielded (or of the subscribe position before any)."""
        return self._consumed.epoch if self._consumed else None

    @property
    def offset(self) -> int | None:
        """Offset of the last item yielded; pass `position` back as ``since`` to resume."""
        return self._consumed.offset if self._consumed else None

    @property
    def position(self) -> Position | None:
        """The position of the last item yielded, as a `Position`."""
        return self._consumed

    @property
    def active(self) -> bool:
        """True until the subscription is closed or has failed."""
        return not self._done

    async def __aenter__(self) -> Subscription:
        await self._owner._start_subscription(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        while True:
            if self._queue:
                item = self._queue.popleft()
                self._consumed = item.position
                return item
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def unsubscribe(self) -> None:
        """Stop receiving; items already queued can still be iterated."""
        if self._stopped:
            return
        self._stopped = True
        self._finish()
        await self._owner._stop_subscription(self)

    # -- driven by the client ---------------------------------------------------------------

    def _begin(self) -> asyncio.Future[None]:
        self._ready = asyncio.get_running_loop().create_future()
        self._syncing = True
        return self._ready

    @property
    def _is_ready(self) -> bool:
        return self._ready is not None and self._ready.done() and not self._ready.cancelled()

    def _sync_request(self) -> tuple[dict[str, Any], bool]:
        """The next subscribe payload, and whether it starts over (no ``since``)."""
        reset, self._reset = self._reset, False
        payload: dict[str, Any] = {"channel": self.channel}
        if self.presence:
            # Every (re)subscribe enters again: a reconnect is a new connection for presence.
            payload["presence"] = True
        if self._tail is not None and not reset:
            payload["since"] = {"epoch": self._tail.epoch, "offset": self._tail.offset}
        return payload, reset

    def _sync_failed(self, reset: bool) -> None:
        self._reset = self._reset or reset
        self._needs_sync = True

    def _on_message(self, msg: Message) -> None:
        if self._done:
            return
        if self._syncing:
            if len(self._pending) >= self._max_queue:
                self._overflow(drop_queue=False)
            else:
                self._pending.append(msg)
            return
        tail = self._tail
        if tail is not None and msg.epoch == tail.epoch:
            if msg.offset <= tail.offset:
                return
            if msg.offset == tail.offset + 1 or msg.latest:
                # A latest-value event may follow a gap: the server coalesced the older
                # events of its type on this channel while we lagged (nothing else is skipped).
                self._push(msg)
                return
        if self._repairs >= MAX_GAP_REPAIRS:
            # The server keeps answering "nothing missing" yet sent this: it cannot fill the
            # gap, so start over from its current state; the Resync tells the reader.
            log.warning("%s: cannot fill the gap before %s; resyncing", self.channel, msg.position)
            self._repairs = 0
            self._reset = True
            self._owner._schedule_sync(self)
            return
        # A gap or a new epoch: ask the server for what lies between, never skip silently.
        log.info("%s: gap after %s (got %s); re-subscribing", self.channel, tail, msg.position)
        self._repairs += 1
        self._pending.append(msg)
        self._owner._schedule_sync(self)

    def _apply_ack(self, ack: Mapping[str, Any], *, asked_since: bool, reset: bool) -> None:
        epoch = str(ack["epoch"])
        offset = ack["offset"]
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"subscribe ack has a bad offset: {offset!r}")
        publications = [Message.from_envelope(env) for env in ack.get("publications") or ()]
        self.state = ack.get("state")
        if asked_since and ack.get("recovered") is True:
            self.recovered = True
            for msg in publications:
                self._accept(msg)
        else:
            # Publications that raced with the subscribe come after the state's position.
            first = publications[0] if publications else None
            start = Position(epoch, first.offset - 1 if first and first.epoch == epoch else offset)
            if asked_since or reset:
                self.recovered = False
                self._push(Resync(self.channel, start.epoch, start.offset, self.state))
            else:
                self.recovered = True
                self._tail = start
                if self._consumed is None:
                    self._consumed = start
            for msg in publications:
                self._accept(msg)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        if self._needs_sync:
            return  # another round is due (overflow or gap); keep buffering until it lands
        self._syncing = False
        pending, self._pending = self._pending, []
        for msg in pending:
            self._on_message(msg)

    def _accept(self, msg: Message) -> None:
        tail = self._tail
        if tail is not None and msg.epoch == tail.epoch and msg.offset <= tail.offset:
            return
        self._push(msg)

    def _push(self, item: Item) -> None:
        if len(self._queue) >= self._max_queue:
            self._overflow(drop_queue=True)
            return
        self._queue.append(item)
        self._repairs = 0
        self._tail = item.position
        self._wakeup.set()

    def _overflow(self, *, drop_queue: bool) -> None:
        # Too much to hold (a slow reader, or a flood while re-subscribing): start over from
        # the current state; the Resync tells the reader, so nothing is lost silently.
        log.warning("%s: over %d items buffered; resynchronising", self.channel, self._max_queue)
        if drop_queue:
            self._queue.clear()
        self._pending.clear()
        self._reset = True
        self._owner._schedule_sync(self)

    def _fail(self, error: TandemError) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        elif not self._done:
            self._error = error
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._pending.clear()
        self._wakeup.set()


def is_transient(error: TandemError) -> bool:
    """Errors after which a re-subscribe is simply tried again."""
    return error.retryable or isinstance(error, ConnectionLost)
