"""Channel events (presence, occupancy) for webhooks: staged off the path that caused them.

Presence changes are not database changes, so they have no transaction to ride in: they are
queued here (bounded; when full, or while the database is down, events are dropped and
counted) and staged in batches by a task of their own, so a join never waits for the
database. Events no endpoint wants are not even queued: which subscriptions exist is re-read
every ``refresh_s`` seconds (at once on this node when its API changes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from domain.graceful import finish_or_cancel
from domain.webhooks import WebhookEvent, wants
from realtime.periodic import Periodic
from server.metrics import Metrics
from storage.webhooks import SqlWebhookRepository, new_id

log = logging.getLogger(__name__)

_BATCH = 500


class ChannelEventFeed:
    def __init__(
        self,
        repository: SqlWebhookRepository,
        metrics: Metrics,
        *,
        on_staged: Callable[[], None],
        refresh_s: float = 5.0,
        max_queued: int = 10_000,
    ) -> None:
        self._repository = repository
        self._metrics = metrics
        self._on_staged = on_staged
        # None: stop once what came before it is staged.
        self._queue: asyncio.Queue[WebhookEvent | None] = asyncio.Queue(maxsize=max_queued)
        # None until first read: everything is queued rather than anything missed.
        self._subscriptions: tuple[str, ...] | None = None
        self._refresher = Periodic(self.refresh, refresh_s, name="webhook-subscriptions")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        with contextlib.suppress(Exception):  # the periodic refresh logs its failures
            await self.refresh()
        self._refresher.start()
        self._task = asyncio.create_task(self._drain(), name="webhook-feed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._refresher.stop()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(asyncio.QueueFull):  # full: what waits is cut off below
            self._queue.put_nowait(None)
        await finish_or_cancel([task], 2.0)

    def publish(self, channel: str, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` on ``channel`` (``<namespace>:<id>``) if an endpoint wants it."""
        namespace = channel.partition(":")[0]
        item = WebhookEvent(
            new_id(), event, {"channel": channel, **data}, datetime.now(UTC), namespace
        )
        if self._subscriptions is not None and not wants(self._subscriptions, item):
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._metrics.webhook_events_dropped.inc()

    async def refresh(self) -> None:
        endpoints = await self._repository.endpoints()
        self._subscriptions = tuple(
            subscription
            for endpoint in endpoints
            if endpoint.enabled
            for subscription in endpoint.events
        )

    async def changed(self) -> None:
        """Endpoints changed on this node: read them again now (a failure waits for the
        periodic refresh)."""
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("could not read webhook subscriptions: %s", exc)

    async def _drain(self) -> None:
        stopping = False
        while not stopping:
            batch: list[WebhookEvent] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) == _BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            if not batch:
                continue
            try:
                if await self._repository.stage(batch):
                    self._on_staged()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.webhook_events_dropped.inc(len(batch))
                log.warning("dropped %d channel events for webhooks: %s", len(batch), exc)
                if not stopping:
                    await asyncio.sleep(1.0)  # the database is down: do not spin
