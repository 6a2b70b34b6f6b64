"""The worker side of jobs: create them, report progress and the outcome over HTTP."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from client_sdk._errors import Conflict, TandemError, error_class
from client_sdk._jobs import CreatedJob, Job, JobErrorInfo, JobStatus

if TYPE_CHECKING:
    from client_sdk._http import ServerAPI

log = logging.getLogger("client_sdk")

# The server's limit on a failure message; `JobReport` trims an exception's text to it.
MAX_ERROR_MESSAGE = 512
_UNSET: Final = object()


class JobsAPI:
    """Jobs over HTTP for backends and workers (``ServerAPI.jobs``), with an API key.

    Calls are retried like every `ServerAPI` call (connection errors, 502/503/504). When a retry
    of `complete`, `fail` or `cancel` is refused with `Conflict` because an earlier attempt did
    go through, the job is read back and returned if it is in the state that call asked for.

    Example:
        >>> created = await api.jobs.create("alice", "checkout")
        >>> async with api.jobs.report(created.job.id) as job:
        ...     await job.progress(40, stage="charging")
        ...     job.result = {"order": 17}
    """

    def __init__(self, api: ServerAPI) -> None:
        self._api = api

    async def create(
        self, owner: str, kind: str, *, id: str | None = None, watch_ttl: int = 900
    ) -> CreatedJob:
        """Create a job in ``pending`` state, with a watch token for the page that shows it.

        Args:
            owner: The user the job belongs to; their ``user:<owner>`` channel gets its events.
            kind: What kind of work it is, for example ``"checkout"``.
            id: The job id (letters, digits and ``_.@=+-``); the server makes one when ``None``.
                With an id of your own a retried create cannot make a second job.
            watch_ttl: Lifetime of the watch token in seconds (30 to 86400).

        Returns:
            The `CreatedJob`: the first snapshot and the watch token.

        Raises:
            InvalidPayload: A bad id, kind or ``watch_ttl``.
        """
        body: dict[str, Any] = {"owner": owner, "kind": kind, "watch_ttl": watch_ttl}
        if id is not None:
            body["id"] = id
        data = await self._api._request("POST", "/api/jobs", json=body)
        try:
            return CreatedJob(
                job=Job.from_snapshot(data["job"]),
                watch_token=str(data["watch_token"]),
                watch_token_expires_at=int(data["watch_token_expires_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise error_class("internal")(f"unexpected response body: {data!r}") from exc

    async def get(self, job_id: str) -> Job:
        """Read a job's current snapshot.

        Raises:
            NotFound: There is no such job.
        """
        return _job(await self._api._request("GET", _path(job_id)))

    async def list(self, owner: str, limit: int = 100) -> builtins.list[Job]:
        """A user's jobs, newest first.

        Args:
            owner: The user.
            limit: At most this many (1 to 500).
        """
        data = await self._api._request("GET", "/api/jobs", params={"owner": owner, "limit": limit})
        jobs = data.get("jobs")
        if not isinstance(jobs, builtins.list):
            raise error_class("internal")(f"unexpected response body: {data!r}")
        return [_job(job) for job in jobs]

    async def progress(
        self, job_id: str, progress: int, *, stage: str | None = None, message: str | None = None
    ) -> Job:
        """Report progress; the job moves to ``processing``.

        Args:
            job_id: The job.
            progress: Percent done, 0 to 100; never less than the last report.
            stage: The current stage, for example ``"charging"`` (``None`` keeps the last one).
            message: A status line for people (``None`` keeps the last one).

        Returns:
            The new snapshot.

        Raises:
            InvalidPayload: ``progress`` is not an integer from 0 to 100, or a text is too long.
            Conflict: ``progress`` is lower than before, or the job already finished.
            NotFound: There is no such job.
        """
        body: dict[str, Any] = {"progress": progress}
        if stage is not None:
            body["stage"] = stage
        if message is not None:
            body["message"] = message
        return await self._change(job_id, "progress", body, settled=None)

    async def complete(self, job_id: str, result: Any = None) -> Job:
        """Mark the job completed (progress 100) with an optional JSON ``result``.

        Raises:
            Conflict: The job already finished.
            NotFound: There is no such job.
        """

        def settled(job: Job) -> bool:
            return job.status is JobStatus.COMPLETED and job.result == result

        return await self._change(job_id, "complete", {"result": result}, settled=settled)

    async def fail(self, job_id: str, message: str, *, code: str = "failed") -> Job:
        """Mark the job failed.

        Args:
            job_id: The job.
            message: Why, for people (1 to 512 characters).
            code: Why, for programs, for example ``"card_declined"``.

        Raises:
            Conflict: The job already finished.
            NotFound: There is no such job.
        """
        error = JobErrorInfo(code, message)

        def settled(job: Job) -> bool:
            return job.status is JobStatus.FAILED and job.error == error

        body = {"error": {"code": code, "message": message}}
        return await self._change(job_id, "fail", body, settled=settled)

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job.

        Raises:
            Conflict: The job already finished.
            NotFound: There is no such job.
        """

        def settled(job: Job) -> bool:
            return job.status is JobStatus.CANCELLED

        return await self._change(job_id, "cancel", {}, settled=settled)

    def report(self, job_id: str) -> JobReport:
        """Report on a job from an ``async with`` block; see `JobReport`."""
        return JobReport(self, job_id)

    async def _change(
        self,
        job_id: str,
        action: str,
        body: Mapping[str, Any],
        *,
        settled: Callable[[Job], bool] | None,
    ) -> Job:
        retried = False

        def on_retry(_: TandemError) -> None:
            nonlocal retried
            retried = True

        try:
            data = await self._api._request(
                "POST", f"{_path(job_id)}/{action}", json=body, on_retry=on_retry
            )
        except Conflict:
            # An attempt whose reply was lost may have gone through: then this is no conflict.
            if not retried or settled is None:
                raise
            job = await self.get(job_id)
            if not settled(job):
                raise
            log.info("job %s: %s had gone through before the retry", job_id, action)
            return job
        return _job(data)


class JobReport:
    """Report progress from a block; the job completes when the block ends, fails if it raises.

    Entering reads the job (`NotFound` when there is none, `Conflict` when it already
    finished). Leaving normally completes it with `result`, unless `complete` or `fail` was
    called in the block. Leaving with an exception (a cancelled task included) fails it with
    code ``"error"`` and the exception's text (its type name when the text is empty, cut to 512
    characters), then lets the exception propagate. If marking the job failed does not work
    either (say the job was cancelled meanwhile), the original exception still propagates, with
    a note saying so.

    Example:
        >>> async with api.jobs.report(job_id) as job:
        ...     await job.progress(40, stage="charging")
        ...     job.result = {"receipt": "r-17"}

    Attributes:
        job_id: The job.
        result: What the job completes with when the block ends normally.
        job: The latest snapshot this report received (``None`` before entering).
    """

    def __init__(self, jobs: JobsAPI, job_id: str) -> None:
        self.job_id = job_id
        self.result: Any = None
        self.job: Job | None = None
        self._jobs = jobs
        self._entered = False
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once this report completed or failed the job."""
        return self._finished

    async def __aenter__(self) -> JobReport:
        if self._entered:
            raise RuntimeError("a JobReport can be entered only once")
        self._entered = True
        job = await self._jobs.get(self.job_id)
        self.job = job
        if job.terminal:
            raise Conflict(f"job {self.job_id} is already {job.status.value}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finished:
            return
        if exc is None:
            await self.complete()
            return
        self._finished = True  # whatever happens next, this report is over
        message = (str(exc) or type(exc).__name__)[:MAX_ERROR_MESSAGE]
        try:
            self.job = await self._jobs.fail(self.job_id, message, code="error")
        except Exception as failure:
            log.warning("job %s: could not mark it failed: %r", self.job_id, failure)
            exc.add_note(f"tandem: job {self.job_id} could not be marked failed: {failure!r}")

    async def progress(
        self, progress: int, *, stage: str | None = None, message: str | None = None
    ) -> Job:
        """Report progress (see `JobsAPI.progress`) and return the new snapshot."""
        self.job = await self._jobs.progress(self.job_id, progress, stage=stage, message=message)
        return self.job

    async def complete(self, result: Any = _UNSET) -> Job:
        """Complete the job now, with ``result`` (default: the `result` attribute).

        Leaving the block afterwards does nothing more, even with an exception.
        """
        value = self.result if result is _UNSET else result
        self.job = await self._jobs.complete(self.job_id, value)
        self.result = value
        self._finished = True
        return self.job

    async def fail(self, message: str, *, code: str = "failed") -> Job:
        """Fail the job now (see `JobsAPI.fail`); leaving the block afterwards does nothing."""
        self.job = await self._jobs.fail(self.job_id, message, code=code)
        self._finished = True
        return self.job


def _path(job_id: str) -> str:
    return f"/api/jobs/{quote(job_id, safe='')}"


def _job(data: object) -> Job:
    if not isinstance(data, Mapping):
        raise error_class("internal")(f"unexpected response body: {data!r}")
    try:
        return Job.from_snapshot(data)
    except ValueError as exc:
        raise error_class("internal")(f"unexpected job snapshot: {exc}") from exc
