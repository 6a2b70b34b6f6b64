"""Latency histograms from the Node workers: 1 %-wide log buckets of microseconds, merged here."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

_BASE = 1.01


class Histogram:
    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.max_us = 0.0

    def add(self, pairs: Iterable[list[int]], max_us: float) -> None:
        for bucket, count in pairs:
            self.buckets[bucket] += count
        self.max_us = max(self.max_us, max_us)

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile in milliseconds (bucket midpoint, within 1 %), or None when empty."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(_BASE ** (bucket + 0.5), self.max_us) / 1000
        return self.max_us / 1000

    @property
    def max_ms(self) -> float | None:
        return self.max_us / 1000 if self.count else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)
