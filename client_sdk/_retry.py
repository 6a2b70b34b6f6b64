"""Backoff with full jitter, shared by the realtime and the HTTP client."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    Full jitter (uniform in ``[0, min(cap, initial * 2**attempt)]``) spreads a crowd of clients
    that lost the same server, so they do not all come back in the same instant.
    """
    ceiling = min(cap, initial * 2.0 ** min(attempt, 30))
    return random.uniform(0.0, max(0.0, ceiling))
