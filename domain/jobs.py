"""Jobs: long-running work (a payment, a fulfilment) that pages watch instead of polling.

State machine: ``pending -> processing -> completed | failed | cancelled``; ``pending`` may go
straight to a terminal state. Terminal states are final, progress never goes backwards, and
every change bumps ``version`` by one, so a watcher can drop stale snapshots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from domain.clock import Clock
from domain.errors import Conflict, DomainError, InvalidPayload, NotFound
from domain.events import DomainEvent, EventSink
from domain.group_commit import GroupCommit


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: str
    kind: str
    status: JobStatus
    progress: int
    stage: str | None
    message: str | None
    result: Any
    error: JobError | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def create(cls, job_id: str, *, owner: str, kind: str, now: datetime) -> Job:
        return cls(
            id=job_id,
            owner=owner,
            kind=kind,
            status=JobStatus.PENDING,
            progress=0,
            stage=None,
            message=None,
            result=None,
            error=None,
            version=1,
            created_at=now,
            updated_at=now,
        )

    def with_progress(
        self, progress: int, *, stage: str | None, message: str | None, now: datetime
    ) -> Job:
        self._require_open("report progress")
        if not 0 <= progress <= 100:
            raise InvalidPayload("progress must be between 0 and 100")
        if progress < self.progress:
            raise Conflict(f"progress cannot go back from {self.progress} to {progress}")
        return self._next(
            now,
            status=JobStatus.PROCESSING,
            progress=progress,
            stage=self.stage if stage is None else stage,
            message=self.message if message is None else message,
        )

    def complete(self, result: Any, *, now: datetime) -> Job:
        self._require_open("complete")
        return self._next(now, status=JobStatus.COMPLETED, progress=100, result=result)

    def fail(self, error: JobError, *, now: datetime) -> Job:
        self._require_open("fail")
        return self._next(now, status=JobStatus.FAILED, error=error)

    def cancel(self, *, now: datetime) -> Job:
        self._require_open("cancel")
        return self._next(now, status=JobStatus.CANCELLED)

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape every client sees, over the socket and over HTTP."""
        return {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "status": self.status.value,
            "progress": self.progress,
            "stage": self.stage,
            "message": self.message,
            "result": self.result,
            "error": None if self.error is None else dataclasses.asdict(self.error),
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def _require_open(self, action: str) -> None:
        if self.status.terminal:
            raise Conflict(f"job {self.id} is {self.status.value}; cannot {action}")

    def _next(self, now: datetime, **changes: Any) -> Job:
        return dataclasses.replace(self, version=self.version + 1, updated_at=now, **changes)


def job_event(kind: str, job: Job) -> DomainEvent:
    """``job.<kind>`` with the whole snapshot, for the job's watchers and its owner."""
    return DomainEvent(
        type=f"job.{kind}",
        data=job.snapshot(),
        topics=(("job", job.id), ("user", job.owner)),
    )


class JobRepository(Protocol):
    """Jobs as stored. ``get`` raises NotFound."""

    async def get(self, job_id: str) -> Job: ...

    async def lock_all(self, job_ids: Collection[str]) -> dict[str, Job]:
        """The jobs among ``job_ids`` that exist, each row held until commit."""
        ...

    async def add(self, job: Job) -> None: ...

    async def save_all(self, versions: Sequence[Job]) -> None:
        """Store successive versions of locked jobs: a row ends at its job's last version, and
        every version goes into the audit trail."""
        ...

    async def list_by_owner(self, owner: str, *, limit: int) -> list[Job]: ...


class JobUnitOfWork(Protocol):
    """One transaction: the job changes and the events they cause commit together."""

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def events(self) -> EventSink: ...


UnitOfWork = Callable[[], AbstractAsyncContextManager[JobUnitOfWork]]


class JobService:
    def __init__(self, unit_of_work: UnitOfWork, clock: Clock, new_id: Callable[[], str]) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._new_id = new_id
        self._changes: GroupCommit[_Change, Job] = GroupCommit(self._commit)

    async def create(self, *, owner: str, kind: str, job_id: str | None = None) -> Job:
        job = Job.create(job_id or self._new_id(), owner=owner, kind=kind, now=self._clock.now())
        async with self._uow() as uow:
            await uow.jobs.add(job)
            uow.events.emit(job_event("created", job))
        return job

    async def progress(
        self, job_id: str, progress: int, *, stage: str | None = None, message: str | None = None
    ) -> Job:
        return await self._change(
            job_id,
            "progress",
            lambda job, now: job.with_progress(progress, stage=stage, message=message, now=now),
        )

    async def complete(self, job_id: str, result: Any = None) -> Job:
        return await self._change(
            job_id, "completed", lambda job, now: job.complete(result, now=now)
        )

    async def fail(self, job_id: str, error: JobError) -> Job:
        return await self._change(job_id, "failed", lambda job, now: job.fail(error, now=now))

    async def cancel(self, job_id: str) -> Job:
        return await self._change(job_id, "cancelled", lambda job, now: job.cancel(now=now))

    async def get(self, job_id: str) -> Job:
        async with self._uow() as uow:
            return await uow.jobs.get(job_id)

    async def list_by_owner(self, owner: str, *, limit: int = 100) -> list[Job]:
        async with self._uow() as uow:
            return await uow.jobs.list_by_owner(owner, limit=limit)

    async def _change(self, job_id: str, kind: str, change: Callable[[Job, datetime], Job]) -> Job:
        return await self._changes.submit(_Change(job_id, kind, change))

    async def _commit(self, changes: list[_Change]) -> list[Job | Exception]:
        """Apply concurrent changes in arrival order, in one transaction (see GroupCommit)."""
        outcomes: list[Job | Exception] = []
        async with self._uow() as uow:
            # The row locks serialize changes to one job across nodes, so events leave in
            # version order; within the batch, a job's changes apply one after another.
            jobs = await uow.jobs.lock_all({change.job_id for change in changes})
            now = self._clock.now()
            versions: list[Job] = []
            for change in changes:
                try:
                    job = jobs.get(change.job_id)
                    if job is None:
                        raise NotFound(f"no job {change.job_id!r}")
                    job = change.apply(job, now)
                except DomainError as exc:
                    outcomes.append(exc)  # refused: changes nothing, fails only its caller
                    continue
                jobs[job.id] = job
                versions.append(job)
                uow.events.emit(job_event(change.kind, job))
                outcomes.append(job)
            await uow.jobs.save_all(versions)
        return outcomes


@dataclass(frozen=True, slots=True)
class _Change:
    job_id: str
    kind: str
    apply: Callable[[Job, datetime], Job]
