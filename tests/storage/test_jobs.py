"""JobService on real databases: state, audit and outbox commit together."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from domain.clock import SystemClock
from domain.errors import Conflict, InvalidPayload, NotFound
from domain.jobs import Job, JobError, JobService, JobStatus
from storage.database import Database
from storage.jobs import SqlJobRepository
from storage.tables import JobEventRow, OutboxRow


@pytest.fixture
def service(units: Any) -> JobService:
    ids = (f"job-{n}" for n in itertools.count(1))
    return JobService(units, SystemClock(), lambda: next(ids))


async def outbox(db: Database) -> list[tuple[str, str, int]]:
    async with db.sessions() as session:
        rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.channel, r.event, r.data["version"]) for r in rows]


async def test_lifecycle_commits_state_events_and_audit_together(
    service: JobService, db: Database
) -> None:
    job = await service.create(owner="alice", kind="checkout")
    await service.progress(job.id, 30, stage="charging", message="Charging card")
    done = await service.complete(job.id, {"receipt": "R-1"})
    assert done.status is JobStatus.COMPLETED and done.version == 3 and done.progress == 100
    assert (await service.get(job.id)) == done
    assert await outbox(db) == [
        ("job:job-1", "job.created", 1),
        ("user:alice", "job.created", 1),
        ("job:job-1", "job.progress", 2),
        ("user:alice", "job.progress", 2),
        ("job:job-1", "job.completed", 3),
        ("user:alice", "job.completed", 3),
    ]
    async with db.sessions() as session:
        versions = await session.scalars(select(JobEventRow.version).order_by(JobEventRow.id))
        assert list(versions) == [1, 2, 3]


async def test_refused_changes_leave_no_trace(service: JobService, db: Database) -> None:
    job = await service.create(owner="alice", kind="checkout")
    await service.progress(job.id, 50)
    before = await outbox(db)
    with pytest.raises(Conflict):
        await service.progress(job.id, 40)
    with pytest.raises(InvalidPayload):
        await service.progress(job.id, 101)
    await service.fail(job.id, JobError("card_declined", "The card was declined"))
    with pytest.raises(Conflict):
        await service.cancel(job.id)
    with pytest.raises(NotFound):
        await service.progress("nope", 1)
    after = await outbox(db)
    assert after[: len(before)] == before and len(after) == len(before) + 2


async def test_concurrent_updates_are_serialized(service: JobService) -> None:
    job = await service.create(owner="alice", kind="bulk")
    results = await asyncio.gather(
        *(service.progress(job.id, p) for p in range(1, 31)), return_exceptions=True
    )
    applied = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if not isinstance(r, Job)]
    # Updates that arrive after a higher one are conflicts, never lost writes.
    assert all(isinstance(r, Conflict) and not r.retryable for r in refused)
    final = await service.get(job.id)
    assert final.version == 1 + len(applied)
    assert final.progress == max(r.progress for r in applied)


async def test_list_by_owner_and_purge(service: JobService, db: Database) -> None:
    first = await service.create(owner="bob", kind="a")
    await service.create(owner="bob", kind="b")
    await service.create(owner="carol", kind="c")
    await service.complete(first.id)
    assert {j.kind for j in await service.list_by_owner("bob")} == {"a", "b"}
    async with db.transaction() as session:
        purged = await SqlJobRepository(session).purge_finished(
            datetime.now(UTC) + timedelta(seconds=1)
        )
    assert purged == 1
    assert {j.kind for j in await service.list_by_owner("bob")} == {"b"}
    async with db.sessions() as session:
        left = await session.scalar(
            select(func.count()).select_from(JobEventRow).where(JobEventRow.job_id == first.id)
        )
    assert left == 0
