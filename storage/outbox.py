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

A broker that is down (the ``transient`` errors) holds everything back until it returns. A
row the broker refuses is tried again on the next passes, holding back only its own channel,
and after ``max_attempts`` it is dead-lettered (``failed_at``, with the error), so one bad row
never blocks its channel for good; dead letters are counted in ``stats()``.
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
class OutboxStats:
    pending: int
    oldest_s: float  # how long the oldest pending row has waited (0 without one)
    dead: int  # dead-lettered rows


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
        transient: tuple[type[Exception], ...] = (Exception,),
        max_attempts: int = 5,
    ) -> None:
        self._db = db
        self._transient = transient
        self._max_attempts = max_attempts
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
                            OutboxRow.attempts,
                        )
                        .where(OutboxRow.sent_at.is_(None), OutboxRow.failed_at.is_(None))
                        .order_by(OutboxRow.id)
                        .limit(self._batch_size)
                    )
                ).all()
            published: list[int] = []
            refused: list[tuple[int, int, Exception]] = []  # (row id, attempts, error)
            failures: list[Exception] = []
            by_channel: dict[str, list[Any]] = {}
            for row in rows:
                by_channel.setdefault(row.channel, []).append(row)

            async def drain(channel_rows: list[Any]) -> None:
                # In order within a channel, stopping at its first failure; channels go out
                # side by side, so one broker round trip is not paid per row in turn.
                for row_id, channel, event, data, key, attempts in channel_rows:
                    try:
                        await self._publish(channel, event, data, key or f"outbox:{row_id}")
                    except self._transient as exc:
                        failures.append(exc)
                        return
                    except Exception as exc:
                        refused.append((row_id, attempts + 1, exc))
                        if attempts + 1 < self._max_attempts:
                            return  # tried again next pass; its channel waits until then
                        continue  # dead-lettered below: the rest of its channel goes on
                    published.append(row_id)

            await asyncio.gather(*(drain(channel_rows) for channel_rows in by_channel.values()))
            if published or refused:
                await self._record(published, refused)
        if failures:
            raise failures[0]
        return len(published)

    async def _record(
        self, published: list[int], refused: list[tuple[int, int, Exception]]
    ) -> None:
        now = datetime.now(UTC)
        async with self._db.transaction(urgent=True) as session:
            if published:
                await session.execute(
                    update(OutboxRow).where(OutboxRow.id.in_(published)).values(sent_at=now)
                )
            for row_id, attempts, exc in refused:
                dead = attempts >= self._max_attempts
                error = f"{type(exc).__name__}: {exc}"[:500]
                await session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id == row_id)
                    .values(attempts=attempts, last_error=error, failed_at=now if dead else None)
                )
                if dead:
                    log.error(
                        "outbox row %d dead-lettered after %d attempts: %s", row_id, attempts, error
                    )
                else:
                    log.warning("outbox row %d refused (attempt %d): %s", row_id, attempts, error)

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
        return (await self.stats()).pending

    async def stats(self) -> OutboxStats:
        """Rows waiting to be published (and how long the oldest has waited), and dead letters."""
        async with self._db.transaction() as session:
            waiting = (
                await session.execute(
                    select(func.count(), func.min(OutboxRow.created_at)).where(
                        OutboxRow.sent_at.is_(None), OutboxRow.failed_at.is_(None)
                    )
                )
            ).one()
            dead = await session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.failed_at.is_not(None))
            )
        oldest = waiting[1]
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)  # SQLite hands back naive datetimes
        age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        return OutboxStats(
            pending=int(waiting[0] or 0), oldest_s=max(0.0, age), dead=int(dead or 0)
        )

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
