"""Token buckets for per-connection request limits."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def take(self, count: float = 1) -> bool:
        """Spend ``count`` tokens if there are that many; spend none otherwise."""
        self._refill()
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False

    def wait_s(self, count: float = 1) -> float:
        """Seconds until ``count`` tokens are there (0 now; never, past ``burst``: inf)."""
        if count > self._burst:
            return float("inf")
        self._refill()
        return max(0.0, (count - self._tokens) / self._rate)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
