"""Waiting on a condition with a deadline, where nothing signals the change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], object], within: float = 5.0, what: str = "") -> None:
    """Return once ``predicate()`` is true; fail after ``within`` seconds."""
    for _ in range(max(1, int(within / 0.01))):
        if predicate():
            return
        await asyncio.sleep(0.01)
    if not predicate():
        raise AssertionError(f"{what or 'condition'} not met within {within}s")
