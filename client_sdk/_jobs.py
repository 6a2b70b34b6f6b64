"""Job snapshots as the SDK hands them out, and the outcomes a watcher can raise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """Where a job is in its life: ``pending -> processing -> completed | failed | cancelled``."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the final states (completed, failed, cancelled)."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class JobErrorInfo:
    """Why a job failed, as its worker reported it.

    Attributes:
        code: A short machine-readable code, for example ``"card_declined"``.
        message: A human-readable explanation.
    """

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Job:
    """One snapshot of a job: the same shape over the socket and over HTTP.

    Every change on the server bumps ``version`` by one, so of two snapshots of the same job the
    one with the higher version is the newer.

    Attributes:
        id: The job id (its channel is ``job:<id>``).
        owner: The user the job belongs to.
        kind: What kind of work it is, for example ``"checkout"``.
        status: The `JobStatus`.
        progress: Percent done, 0 to 100; never goes backwards.
        stage: The worker's current stage, for example ``"charging"``.
        message: A human-readable status line.
        result: The worker's result (any JSON) once completed.
        error: Why it failed, once failed.
        version: Starts at 1; every change adds one.
        created_at: When the job was created.
        updated_at: When it last changed.
    """

    id: str
    owner: str
    kind: str
    status: JobStatus
    progress: int
    stage: str | None
    message: str | None
    result: Any
    error: JobErrorInfo | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        """True once the job is completed, failed or cancelled: it will not change again."""
        return self.status.terminal

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> Job:
        """Parse a job snapshot (an event's ``data``, a subscribe ``state`` or an HTTP body).

        Raises:
            ValueError: If a field is missing or has the wrong type.
        """
        try:
            error = snapshot["error"]
            return cls(
                id=_str(snapshot["id"]),
                owner=_str(snapshot["owner"]),
                kind=_str(snapshot["kind"]),
                status=JobStatus(snapshot["status"]),
                progress=_int(snapshot["progress"]),
                stage=_optional_str(snapshot.get("stage")),
                message=_optional_str(snapshot.get("message")),
                result=snapshot.get("result"),
                error=None
                if error is None
                else JobErrorInfo(_str(error["code"]), _str(error["message"])),
                version=_int(snapshot["version"]),
                created_at=datetime.fromisoformat(_str(snapshot["created_at"])),
                updated_at=datetime.fromisoformat(_str(snapshot["updated_at"])),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed job snapshot: {snapshot!r}") from exc


@dataclass(frozen=True, slots=True)
class CreatedJob:
    """A new job and the token that lets one page watch it.

    Attributes:
        job: The job's first snapshot (``pending``, version 1).
        watch_token: A short-lived token that may subscribe to ``job:<id>`` and read the job
            over HTTP, and nothing else; hand it to the page that shows the progress.
        watch_token_expires_at: The token's expiry, in seconds since the Unix epoch.
    """

    job: Job
    watch_token: str
    watch_token_expires_at: int


class JobUnsuccessful(Exception):
    """A watched job ended without completing; ``job`` is its final snapshot.

    Not a `TandemError`: the request to watch worked, the job itself did not succeed.

    Attributes:
        job: The final snapshot.
    """

    def __init__(self, job: Job, message: str) -> None:
        self.job = job
        super().__init__(message)


class JobFailed(JobUnsuccessful):
    """The watched job failed; ``job.error`` says why (also as ``error``)."""

    def __init__(self, job: Job) -> None:
        self.error = job.error
        reason = f"{job.error.message} ({job.error.code})" if job.error else "no reason given"
        super().__init__(job, f"job {job.id} failed: {reason}")


class JobCancelled(JobUnsuccessful):
    """The watched job was cancelled."""

    def __init__(self, job: Job) -> None:
        super().__init__(job, f"job {job.id} was cancelled")


def outcome(job: Job) -> Job:
    """Return a completed job; raise `JobFailed` or `JobCancelled` for the other final states."""
    if job.status is JobStatus.FAILED:
        raise JobFailed(job)
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(job)
    return job


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    return None if value is None else _str(value)
