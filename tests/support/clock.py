"""A test clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class StepClock:
    """Each reading a millisecond later, so creation order is the page order."""

    def __init__(self) -> None:
        self._now = datetime(2026, 11, 23, 12, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(milliseconds=1)
        return self._now
