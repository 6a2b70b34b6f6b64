"""Delivery receipts: when a ``notification.created`` reaches one of the user's connections,
the notification's first delivery time is recorded.

Cheap on the delivery path: an id goes into a set, and one background flush writes every
pending id in a single statement a moment later. Other event types cost one string compare.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from realtime.broker import Publication

log = logging.getLogger(__name__)

RECEIPT_EVENT = "notification.created"
Record = Callable[[Sequence[str]], Awaitable[object]]


class DeliveryReceipts:
    def __init__(self, record: Record, *, delay: float = 0.05) -> None:
        self._record = record
        self._delay = delay
        self._pending: set[str] = set()
        self._flush: asyncio.Task[None] | None = None

    def delivered(self, pub: Publication, recipients: int) -> None:
        if pub.event != RECEIPT_EVENT or recipients <= 0 or not isinstance(pub.data, dict):
            return
        notification_id = pub.data.get("id")
        if not isinstance(notification_id, str):
            return
        self._pending.add(notification_id)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        await asyncio.sleep(self._delay)
        ids, self._pending, self._flush = sorted(self._pending), set(), None
        try:
            await self._record(ids)
        except Exception:
            log.warning(
                "could not record the delivery of %d notifications", len(ids), exc_info=True
            )

    async def close(self) -> None:
        """Write what is pending now (on shutdown, before the database goes)."""
        task, self._flush = self._flush, None
        if task is not None:
            task.cancel()
        ids, self._pending = sorted(self._pending), set()
        if ids:
            try:
                await self._record(ids)
            except Exception:
                log.warning("could not record %d deliveries on shutdown", len(ids), exc_info=True)
