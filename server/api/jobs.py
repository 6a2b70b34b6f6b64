"""The jobs HTTP API: workers report progress, pages and dashboards read the same snapshot."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.errors import InvalidPayload, PermissionDenied
from domain.jobs import Job, JobError
from realtime.channels import InvalidChannel, check_id, job_channel
from server.api.callers import ERRORS, RuntimeDep, needs
from server.auth.tokens import Principal, mint_token
from server.payloads import JsonData
from server.runtime import Runtime

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERRORS)  # type: ignore[arg-type]
JobsCaller = Annotated[Principal, needs("jobs")]
JobsService = Annotated[Principal, needs("jobs", service=True)]

Text = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateJob(Body):
    owner: Text
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    id: Text | None = None
    watch_ttl: Annotated[int, Field(ge=30, le=86_400)] = 900


class Progress(Body):
    progress: Annotated[int, Field(ge=0, le=100, strict=True)]
    stage: Text | None = None
    message: Annotated[str, StringConstraints(max_length=512)] | None = None


class Complete(Body):
    result: JsonData = None


class Failure(Body):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "failed"
    message: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Fail(Body):
    error: Failure | Annotated[str, StringConstraints(min_length=1, max_length=512)]


class Created(BaseModel):
    job: dict[str, Any]
    watch_token: str
    watch_token_expires_at: int


class JobList(BaseModel):
    jobs: list[dict[str, Any]]


@router.post("", status_code=201, response_model=Created)
async def create_job(body: CreateJob, _: JobsService, runtime: RuntimeDep) -> Created:
    """Create a job; the watch token lets one page subscribe to (and poll) just this job."""
    if body.id is not None:
        try:
            check_id(body.id)
        except InvalidChannel as exc:
            raise InvalidPayload(f"id: {exc}") from None
    job = await runtime.jobs.create(owner=body.owner, kind=body.kind, job_id=body.id)
    token, expires_at = watch_token(runtime, job, body.watch_ttl)
    return Created(job=job.snapshot(), watch_token=token, watch_token_expires_at=expires_at)


@router.get("", response_model=JobList)
async def list_jobs(
    caller: JobsCaller,
    runtime: RuntimeDep,
    owner: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobList:
    """A user's jobs, newest first (users see their own; API keys anyone's)."""
    owner = owner or caller.sub
    if not caller.is_service and owner != caller.sub:
        raise PermissionDenied("users may list only their own jobs")
    jobs = await runtime.jobs.list_by_owner(owner, limit=limit)
    return JobList(jobs=[job.snapshot() for job in jobs])


@router.get("/{job_id}")
async def get_job(job_id: str, caller: JobsCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """The polling fallback: the same snapshot the socket delivers."""
    await _may_read(runtime, caller, job_id)
    return (await runtime.jobs.get(job_id)).snapshot()


@router.post("/{job_id}/progress")
async def report_progress(
    job_id: str, body: Progress, _: JobsService, runtime: RuntimeDep
) -> dict[str, Any]:
    return await progress(runtime, job_id, body)


@router.post("/{job_id}/complete")
async def complete_job(
    job_id: str, body: Complete, _: JobsService, runtime: RuntimeDep
) -> dict[str, Any]:
    return await complete(runtime, job_id, body)


@router.post("/{job_id}/fail")
async def fail_job(job_id: str, body: Fail, _: JobsService, runtime: RuntimeDep) -> dict[str, Any]:
    return await fail(runtime, job_id, body)


# The workers' calls, shared by the routes above and by ``server.api.fast_lane``.


async def progress(runtime: Runtime, job_id: str, body: Progress) -> dict[str, Any]:
    job = await runtime.jobs.progress(job_id, body.progress, stage=body.stage, message=body.message)
    return job.snapshot()


async def complete(runtime: Runtime, job_id: str, body: Complete) -> dict[str, Any]:
    return (await runtime.jobs.complete(job_id, body.result)).snapshot()


async def fail(runtime: Runtime, job_id: str, body: Fail) -> dict[str, Any]:
    error = body.error if isinstance(body.error, Failure) else Failure(message=body.error)
    return (await runtime.jobs.fail(job_id, JobError(error.code, error.message))).snapshot()


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, caller: JobsCaller, runtime: RuntimeDep) -> dict[str, Any]:
    """API keys, and the job's owner, may cancel it."""
    if not caller.is_service and (await runtime.jobs.get(job_id)).owner != caller.sub:
        raise PermissionDenied("only the job's owner may cancel it")
    return (await runtime.jobs.cancel(job_id)).snapshot()


def watch_token(runtime: Runtime, job: Job, ttl: int) -> tuple[str, int]:
    """A token that can watch one job and nothing else (its subject owns nothing)."""
    return mint_token(
        runtime.settings, sub=f"watch:{job.id}", ttl_s=ttl, channels=[job_channel(job.id)]
    )


async def _may_read(runtime: Runtime, caller: Principal, job_id: str) -> None:
    if caller.is_service:
        return
    channel = runtime.namespaces.parse(job_channel(job_id))
    if not await runtime.authorizer.can_subscribe(caller, channel):
        raise PermissionDenied(f"not allowed to read job {job_id}")
