"""The transactional outbox: persist, then publish.

Events are staged in the same session (and so the same transaction) as the change that caused
them. A relay on every node publishes committed rows in id order and marks them sent. On
PostgreSQL one relay at a time holds an advisory lock, so rows are published once and in order
even with many nodes; on SQLite the single node relays. A row published but not yet marked
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.tables import OutboxRow

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


def stage(session: AsyncSession, messages: Iterable[OutboxMessage]) -> None:
    """Add events to ``session``; they commit (or roll back) with everything else in it."""
    now = datetime.now(UTC)
    session.add_all(
        OutboxRow(
            channel=m.channel,
            event=m.event,
            data=m.data,
            idempotency_key=m.idempotency_key,
            created_at=now,
        )
        for m in messages
    )


class OutboxRelay:
    """Publishes committed outbox rows. Use as ``async with relay:``; ``wake()`` after commit."""

    def __init__(
        self,
        engine: AsyncEngine,
        publish: Publish,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(hours=1),
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._postgres = engine.dialect.name == "postgresql"
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        async with self._lock, self._sessions() as session, session.begin():
            if self._postgres:
                locked = await session.scalar(select(func.pg_try_advisory_xact_lock(_RELAY_LOCK)))
                if not locked:
                    return 0  # another node is relaying right now
            rows = (
                await session.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.sent_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self._batch_size)
                    .with_for_update()
                )
            ).all()
            published: list[int] = []
            failure: Exception | None = None
            for row in rows:
                try:
                    key = row.idempotency_key or f"outbox:{row.id}"
                    await self._publish(row.channel, row.event, row.data, key)
                except Exception as exc:
                    failure = exc  # keep order: nothing after a failed row goes out
                    break
                published.append(row.id)
            if published:
                await session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(published))
                    .values(sent_at=datetime.now(UTC))
                )
        if failure is not None:
            raise failure
        return len(published)

    async def pending(self) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.sent_at.is_(None))
            )
            return int(count or 0)

    async def purge(self) -> None:
        """Forget rows sent longer ago than the retention period."""
        horizon = datetime.now(UTC) - self._retention
        async with self._sessions() as session, session.begin():
            await session.execute(delete(OutboxRow).where(OutboxRow.sent_at < horizon))

    async def _run(self) -> None:
        delay = 0.1
        purged_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                while await self.relay_once() == self._batch_size:
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
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
