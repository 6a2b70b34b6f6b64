"""The transactional outbox: persist, then publish.

Events are staged in the same session (and so the same transaction) as the change that caused
them. A relay on every node publishes committed rows in id order and marks them sent. On
PostgreSQL one relay at a time holds an advisory lock for its whole pass, so rows are published
once and in order even with many nodes; on SQLite the single node relays. Publishing happens
between two short transactions, never while one is open. A row published but not yet marked
(crash in between) is published again with the same idempotency key, which the broker dedupes.

Order per channel follows row ids. Writers that change one aggregate must hold its row lock
while staging (an UPDATE does), so two transactions never stage events for the same channel
concurrently and ids follow commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.graceful import finish_or_cancel
from storage.database import Database
from storage.tables import Base, OutboxRow

log = logging.getLogger(__name__)

# Any fixed 64-bit number: the cluster-wide "one relay at a time" lock on PostgreSQL.
_RELAY_LOCK = 0x74616E64656D  # "tandem"

Publish = Callable[[str, str, Any, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    channel: str
    event: str
    data: Any
    idempotency_key: str | None = None


async def stage(session: AsyncSession, messages: Iterable[OutboxMessage]) -> None:
    """Write events in ``session``'s transaction; they commit (or roll back) with it."""
    now = datetime.now(UTC)
    rows = [
        {
            "channel": m.channel,
            "event": m.event,
            "data": m.data,
            "idempotency_key": m.idempotency_key,
            "created_at": now,
        }
        for m in messages
    ]
    if rows:
        await session.execute(insert(Base.metadata.tables[OutboxRow.__tablename__]), rows)


class OutboxRelay:
    """Publishes committed outbox rows. Use as ``async with relay:``; ``wake()`` after commit."""

    def __init__(
        self,
        db: Database,
        publish: Publish,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(hours=1),
        grace: float = 5.0,
    ) -> None:
        self._db = db
        self._grace = grace
        self._stopping = False
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention = retention
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.healthy = True

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # A pass under way finishes (for up to ``grace``); the loop then sees it is stopping.
        self._stopping = True
        self._wake.set()
        await finish_or_cancel([task], self._grace)

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        async with self._lock, self._cluster_lock() as ours:
            if not ours:
                return 0  # another node is relaying right now
            async with self._db.transaction(urgent=True) as session:
                rows = (
                    await session.execute(
                        select(
                            OutboxRow.id,
                            OutboxRow.channel,
                            OutboxRow.event,
                            OutboxRow.data,
                            OutboxRow.idempotency_key,
                        )
                        .where(OutboxRow.sent_at.is_(None))
                        .order_by(OutboxRow.id)
                        .limit(self._batch_size)
                    )
                ).all()
            published: list[int] = []
            failures: list[Exception] = []
            by_channel: dict[str, list[Any]] = {}
            for row in rows:
                by_channel.setdefault(row.channel, []).append(row)

            async def drain(channel_rows: list[Any]) -> None:
                # In order within a channel, stopping at its first failure; channels go out
                # side by side, so one broker round trip is not paid per row in turn.
                for row_id, channel, event, data, key in channel_rows:
                    try:
                        await self._publish(channel, event, data, key or f"outbox:{row_id}")
                    except Exception as exc:
                        failures.append(exc)
                        return
                    published.append(row_id)

            await asyncio.gather(*(drain(channel_rows) for channel_rows in by_channel.values()))
            if published:
                async with self._db.transaction(urgent=True) as session:
                    await session.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id.in_(published))
                        .values(sent_at=datetime.now(UTC))
                    )
        if failures:
            raise failures[0]
        return len(published)

    @contextlib.asynccontextmanager
    async def _cluster_lock(self) -> AsyncIterator[bool]:
        """On PostgreSQL, a session advisory lock held on its own connection for the pass."""
        if not self._db.postgres:
            yield True
            return
        async with self._db.urgent_engine.connect() as connection:
            ours = bool(await connection.scalar(select(func.pg_try_advisory_lock(_RELAY_LOCK))))
            try:
                yield ours
            finally:
                if ours:
                    await connection.scalar(select(func.pg_advisory_unlock(_RELAY_LOCK)))

    async def pending(self) -> int:
        async with self._db.transaction() as session:
            count = await session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
            )
            return int(count or 0)

    async def purge(self) -> None:
        """Forget rows sent longer ago than the retention period."""
        horizon = datetime.now(UTC) - self._retention
        async with self._db.transaction() as session:
            await session.execute(delete(OutboxRow).where(OutboxRow.sent_at < horizon))

    async def _run(self) -> None:
        delay = 0.1
        purged_at = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # Cleared before the pass, not after: a commit that wakes us during a pass must
            # get a pass of its own instead of waiting for the next poll.
            self._wake.clear()
            try:
                while await self.relay_once() == self._batch_size and not self._stopping:
                    pass  # a full batch: there may be more right away
                self.healthy, delay = True, 0.1
                if loop.time() - purged_at > 60:
                    await self.purge()
                    purged_at = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                log.warning("outbox relay failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
