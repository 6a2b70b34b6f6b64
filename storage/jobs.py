"""SqlJobRepository: jobs and their audit trail; rows never leave this module."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict, NotFound
from domain.jobs import Job, JobError, JobStatus
from storage.tables import Base, JobEventRow, JobRow


class StaleWrite(Conflict):
    """Someone else changed the job since it was read (the row lock should prevent it)."""

    retryable = True


_JOBS = Base.metadata.tables[JobRow.__tablename__]
_AUDIT = Base.metadata.tables[JobEventRow.__tablename__]
# Executed with one parameter set per job: SET takes the changing columns from each set.
_SAVE = update(_JOBS).where(
    _JOBS.c.id == bindparam("b_id"), _JOBS.c.version == bindparam("b_expected")
)


class SqlJobRepository:
    """Core statements rather than ORM objects: a job change is a handful of rows written once,
    and the ORM's unit of work was most of the server's CPU per change (py-spy, bench.jobs)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, job_id: str) -> Job:
        row = (await self._session.execute(select(_JOBS).where(_JOBS.c.id == job_id))).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return _to_job(row)

    async def lock_all(self, job_ids: Collection[str]) -> dict[str, Job]:
        # FOR UPDATE on PostgreSQL, in id order so that two nodes' batches never wait on each
        # other in a cycle; SQLite transactions are already exclusive (BEGIN IMMEDIATE).
        statement = (
            select(_JOBS)
            .where(_JOBS.c.id.in_(sorted(job_ids)))
            .order_by(_JOBS.c.id)
            .with_for_update()
        )
        return {row.id: _to_job(row) for row in await self._session.execute(statement)}

    async def add(self, job: Job) -> None:
        try:
            await self._session.execute(insert(_JOBS).values(**_columns(job)))
        except IntegrityError:
            raise Conflict(f"a job with id {job.id!r} already exists") from None
        await self._audit([job])

    async def save_all(self, versions: Sequence[Job]) -> None:
        if not versions:
            return
        latest: dict[str, Job] = {}
        expected: dict[str, int] = {}
        for job in versions:
            expected.setdefault(job.id, job.version - 1)
            latest[job.id] = job
        # One executemany per table, whatever the batch size: a statement is a round trip.
        result = await self._session.execute(
            _SAVE,
            [
                {**_changing_columns(job), "b_id": job.id, "b_expected": expected[job.id]}
                for job in latest.values()
            ],
        )
        # The version check makes a lost update impossible even without the row locks; only
        # some drivers count rows across an executemany (asyncpg does not; there the FOR UPDATE
        # locks alone keep writers apart).
        multi_rowcount = self._session.get_bind().dialect.supports_sane_multi_rowcount
        if multi_rowcount and result.rowcount != len(latest):  # type: ignore[attr-defined]
            raise StaleWrite("a job changed concurrently")
        await self._audit(versions)

    async def list_by_owner(self, owner: str, *, limit: int) -> list[Job]:
        rows = await self._session.execute(
            select(_JOBS)
            .where(_JOBS.c.owner == owner)
            .order_by(_JOBS.c.created_at.desc(), _JOBS.c.id)
            .limit(limit)
        )
        return [_to_job(row) for row in rows]

    async def purge_finished(self, before: datetime) -> int:
        """Delete terminal jobs last changed before ``before`` (with their audit trail)."""
        terminal = [s.value for s in JobStatus if s.terminal]
        ids = list(
            await self._session.scalars(
                select(JobRow.id).where(JobRow.status.in_(terminal), JobRow.updated_at < before)
            )
        )
        if ids:
            await self._session.execute(delete(JobEventRow).where(JobEventRow.job_id.in_(ids)))
            await self._session.execute(delete(JobRow).where(JobRow.id.in_(ids)))
        return len(ids)

    async def _audit(self, versions: Sequence[Job]) -> None:
        await self._session.execute(
            insert(_AUDIT),
            [
                {
                    "job_id": job.id,
                    "version": job.version,
                    "snapshot": job.snapshot(),
                    "created_at": job.updated_at,
                }
                for job in versions
            ],
        )


def _columns(job: Job) -> dict[str, object]:
    return {
        "id": job.id,
        "owner": job.owner,
        "kind": job.kind,
        "created_at": job.created_at,
        **_changing_columns(job),
    }


def _changing_columns(job: Job) -> dict[str, object]:
    return {
        "status": job.status.value,
        "progress": job.progress,
        "stage": job.stage,
        "message": job.message,
        "result": job.result,
        "error": None
        if job.error is None
        else {"code": job.error.code, "message": job.error.message},
        "version": job.version,
        "updated_at": job.updated_at,
    }


def _to_job(row: Row[Any]) -> Job:
    error = row.error
    return Job(
        id=row.id,
        owner=row.owner,
        kind=row.kind,
        status=JobStatus(row.status),
        progress=row.progress,
        stage=row.stage,
        message=row.message,
        result=row.result,
        error=None if error is None else JobError(str(error["code"]), str(error["message"])),
        version=row.version,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
