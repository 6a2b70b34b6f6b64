"""One websocket connection's outgoing frames: in order, batched, bounded, coalesced.

Every frame for a connection goes through its ``Outbound`` once the fan-out path has taken
the connection over, so acks, notices and publications keep their order. Frames written in
one event-loop iteration leave in one ``transport.write`` (the ``Flusher`` runs once per
iteration for all connections that have something to send). While the kernel does not take
more (the transport paused writing), frames wait here: a latest-value frame (job progress,
aircraft position...) replaces the one before it when nothing else of its channel came in
between, and a connection is cut off as slow (what waits here is dropped; what the
transport and the kernel hold still reaches it before the notice) when

- its backlog exceeds its bound: what waits here, in the transport and in the kernel's send
  buffer (capped for that, and counted as full; a frame larger than half the bound, such as
  a big document's sync, does not count against it), or
- ``max_lag`` publications of one channel (a number, or a channel's) wait here: dropping more
  than the channel's history holds would leave it unable to resume from its position.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

# Publications of one channel that may wait: a number, or a channel's (its history's size).
MaxLag = int | Callable[[str], int]


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def bound_send_buffer(self, size: int) -> int: ...


class Flusher:
    """Writes every connection's batch once per event-loop iteration."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Outbound] = []
        self._scheduled = False

    def mark(self, outbound: Outbound) -> None:
        self._dirty.append(outbound)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for outbound in dirty:
            outbound.flush()


class Outbound:
    """The ordered, bounded queue of frames in front of one websocket transport."""

    __slots__ = (
        "_transport",
        "_flusher",
        "_limit",
        "_on_overflow",
        "_frames",
        "_bytes",
        "_marked",
        "_paused",
        "_tails",
        "_holes",
        "_kernel",
        "_max_lag",
        "_lags",
        "_large",
        "overflowed",
        "closed",
        "coalesced",
        "overflow_at",
    )

    def __init__(
        self,
        transport: Transport,
        flusher: Flusher,
        *,
        limit_bytes: int,
        on_overflow: Callable[[Outbound], None],
        max_lag: MaxLag = 0,
    ) -> None:
        self._transport = transport
        self._flusher = flusher
        self._limit = limit_bytes
        # What the kernel may hold for this client, counted as full while writing is paused.
        self._kernel = transport.bound_send_buffer(limit_bytes // 4)
        self._max_lag = max_lag if callable(max_lag) else _bound(max_lag)  # 0: no bound
        # While paused: publications waiting per channel (made on the first; most never lag).
        self._lags: dict[str, int] | None = None
        self._large = 0  # bytes of frames over half the bound handed to the transport
        self._on_overflow = on_overflow
        self._frames: list[bytes | None] = []
        self._bytes = 0
        self._marked = False
        self._paused = False
        # While paused: each channel's last queued frame, as (latest-value key, index).
        self._tails: dict[str, tuple[str | None, int]] = {}
        self._holes = 0
        self.overflowed = False
        self.closed = False
        self.coalesced = 0
        # (queued bytes, transport bytes) when the bound was crossed, for the log.
        self.overflow_at = (0, 0)

    @property
    def backlog_bytes(self) -> int:
        return self._bytes

    def write(self, data: bytes, channel: str | None = None, key: str | None = None) -> None:
        """Queue one frame. ``channel`` is set for publications; ``key`` for latest-value
        ones, which may replace the previous frame of their channel while the client lags."""
        if self.closed:
            return
        if self.overflowed:
            if channel is None:  # the slow notice and the close still go out
                self._transport.write(data)
            return
        frames = self._frames
        lagging = False
        if self._paused and channel is not None:
            tail = self._tails.get(channel)
            if key is not None and tail is not None and tail[0] == key:
                old = frames[tail[1]]
                if old is not None:
                    frames[tail[1]] = None
                    self._bytes -= len(old)
                    self._holes += 1
                    self.coalesced += 1
            else:
                lags = self._lags
                if lags is None:
                    lags = self._lags = {}
                lag = lags[channel] = lags.get(channel, 0) + 1
                lagging = 0 < self._max_lag(channel) < lag
            self._tails[channel] = (key, len(frames))
        frames.append(data)
        self._bytes += len(data)
        if self._paused:
            if lagging or self._bytes + self._in_flight() > self._limit:
                self._overflow()
        elif not self._marked:
            self._marked = True
            self._flusher.mark(self)

    def _in_flight(self) -> int:
        """What the transport and the kernel hold, but for large frames (one big document
        sync in flight must not make its client look slow)."""
        return max(0, self._transport.get_write_buffer_size() - self._large) + self._kernel

    def flush(self) -> None:
        self._marked = False
        if self._paused or self.closed or not self._frames:
            return
        self._write_all()

    def pause(self) -> None:
        """The transport's buffer is over its high-water mark."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._tails.clear()
        self._lags = None
        self._large = 0  # the transport is down to its low-water mark: they have left
        if self._frames and not self.closed and not self._marked:
            self._marked = True
            self._flusher.mark(self)

    def close(self) -> None:
        """Hand what is queued to the transport (it goes out before the close frame) and stop."""
        if not self.closed and self._frames and not self.overflowed:
            self._write_all()
        self.closed = True
        self._frames = []
        self._tails.clear()

    def _write_all(self) -> None:
        frames, self._frames = self._frames, []
        if self._holes:
            self._holes = 0
            frames = [f for f in frames if f is not None]
        self._bytes = 0
        self._tails.clear()
        self._lags = None
        half = self._limit // 2
        self._large += sum(len(f) for f in frames if f is not None and len(f) > half)
        # Even at pause the transport takes the data (it buffers); pause only stops us
        # from handing it more.
        self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))  # type: ignore[arg-type]

    def _overflow(self) -> None:
        self.overflow_at = (self._bytes, self._transport.get_write_buffer_size() + self._kernel)
        self.overflowed = True
        self._frames = []
        self._bytes = 0
        self._tails.clear()
        self._lags = None
        self._holes = 0
        self._on_overflow(self)


def _bound(count: int) -> Callable[[str], int]:
    return lambda channel: count
