"""JobService on real databases: state, audit and outbox commit together."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

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


async def test_concurrent_changes_share_transactions_and_fail_one_by_one(
    service: JobService, db: Database
) -> None:
    jobs = [await service.create(owner="dora", kind="bulk") for _ in range(20)]
    transactions = 0

    def count(*_: Any) -> None:
        nonlocal transactions
        transactions += 1

    event.listen(db.engine.sync_engine, "begin", count)
    try:
        calls = [service.progress(job.id, step) for step in (10, 20, 30) for job in jobs]
        calls += [service.progress("nope", 5), service.progress(jobs[0].id, 1)]
        calls += [service.complete(job.id, {"n": n}) for n, job in enumerate(jobs)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        event.remove(db.engine.sync_engine, "begin", count)
    assert isinstance(results[60], NotFound) and isinstance(results[61], Conflict)
    assert all(isinstance(r, Job) for r in results[:60] + results[62:])
    # 82 changes, but they arrive together: a handful of transactions, not 82.
    assert transactions <= 5
    for n, job in enumerate(jobs):
        final = await service.get(job.id)
        assert (final.version, final.status, final.result) == (5, JobStatus.COMPLETED, {"n": n})
    per_job: dict[str, list[int]] = {}
    for channel, _, version in await outbox(db):
        per_job.setdefault(channel, []).append(version)
    assert len(per_job) == 21  # 20 jobs' channels and dora's
    assert all(per_job[f"job:{job.id}"] == [1, 2, 3, 4, 5] for job in jobs)
    async with db.sessions() as session:
        audited = await session.scalar(select(func.count()).select_from(JobEventRow))
    assert audited == 20 * 5


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
