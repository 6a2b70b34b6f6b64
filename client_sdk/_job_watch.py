"""The watcher side of jobs: follow one job's snapshots over a `Client` until it finishes."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from client_sdk._errors import ClientClosed, NotFound, error_class
from client_sdk._jobs import Job, outcome
from client_sdk._models import Message, Resync
from client_sdk._subscription import Subscription

log = logging.getLogger("client_sdk")

ProgressCallback = Callable[[Job], object]
"""Called with each snapshot; may be a plain function or a coroutine function."""


class _Subscriber(Protocol):
    def subscribe(self, channel: str) -> Subscription: ...


class JobWatcher:
    """Jobs for a `Client` (``client.jobs``): wait for a job, or iterate its snapshots.

    Both subscribe to ``job:<id>`` (the token must be the job's owner, carry a grant for it, as
    the watch token from `JobsAPI.create` does, or be an admin), start from the current
    snapshot the server sends on subscribe, and skip any snapshot whose ``version`` is not
    newer than the last one seen, so a stale snapshot is never delivered. They go on across
    reconnects: the client re-subscribes and recovers, or resumes from the job's state.

    One client holds one subscription per channel: watch a job once at a time per client.
    """

    def __init__(self, client: _Subscriber) -> None:
        self._client = client

    def watch(self, job_id: str) -> JobWatch:
        """Iterate the job's snapshots: the current one first, ending after a final one.

        Example:
            >>> async for job in client.jobs.watch(job_id):
            ...     print(job.status, job.progress, job.stage)

        To stop early, use ``async with client.jobs.watch(job_id) as updates:`` (or call
        `JobWatch.aclose`), which unsubscribes at once.
        """
        return JobWatch(self._client, job_id)

    async def wait(
        self,
        job_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the common "wait for a job" case
    ) -> Job:
        """Wait until the job finishes; return it when it completed.

        Args:
            job_id: The job.
            on_progress: Called with every snapshot `watch` yields (the current one, each
                newer one, and the final one); a sync or async callable. What it raises
                ends the wait.
            timeout: Give up after this many seconds (``None``: no limit).

        Returns:
            The completed job's final snapshot.

        Raises:
            JobFailed: The job failed (``.job`` is the final snapshot, ``.error`` why).
            JobCancelled: The job was cancelled.
            TimeoutError: It did not finish within ``timeout``.
            NotFound: There is no such job.
            PermissionDenied: The token may not watch this job.
        """
        async with asyncio.timeout(timeout), self.watch(job_id) as updates:
            final: Job | None = None
            async for job in updates:
                if on_progress is not None:
                    result = on_progress(job)
                    if inspect.isawaitable(result):
                        await result
                final = job
            if final is None or not final.terminal:  # iteration ends only after a final one
                raise ClientClosed(f"stopped watching job {job_id} before it finished")
            return outcome(final)


class JobWatch:
    """An async iterator over one job's snapshots, newest version last.

    Yields the current snapshot first, then each newer one; ends after the final one
    (completed, failed or cancelled). Subscribes on the first ``anext`` (or on entering it
    with ``async with``) and unsubscribes after the final snapshot, on an error, or on
    `aclose`.

    Raises (from iteration):
        NotFound: There is no such job (or it was removed before it finished).
        PermissionDenied: The token may not watch this job.
        ClientClosed: The client closed before the job finished.
        TandemError: The client gave up (for example `TokenExpired` with a plain token).

    Attributes:
        job_id: The job.
        latest: The last snapshot yielded (``None`` before the first).
    """

    def __init__(self, client: _Subscriber, job_id: str) -> None:
        self.job_id = job_id
        self.latest: Job | None = None
        self._client = client
        self._sub: Subscription | None = None
        self._first: Job | None = None
        self._closed = False

    async def __aenter__(self) -> JobWatch:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> JobWatch:
        return self

    async def __anext__(self) -> Job:
        if self._closed:
            raise StopAsyncIteration
        try:
            if self._sub is None:
                await self._start()
            first, self._first = self._first, None
            if first is not None:
                return await self._deliver(first)
            sub = self._sub
            assert sub is not None
            while True:
                try:
                    item = await anext(sub)
                except StopAsyncIteration:
                    raise ClientClosed(
                        f"the subscription to job {self.job_id} ended before the job finished"
                    ) from None
                job = self._snapshot_of(item)
                if job is not None and (self.latest is None or job.version > self.latest.version):
                    return await self._deliver(job)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop watching and unsubscribe; iterating afterwards ends at once. Safe to repeat."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this JobWatch is closed")
        if self._sub is not None:
            return
        sub = self._client.subscribe(f"job:{self.job_id}")
        await sub.__aenter__()
        self._sub = sub
        try:
            self._first = self._initial(sub.state)
        except BaseException:
            await self.aclose()
            raise

    def _initial(self, state: Any) -> Job:
        if state is None:
            raise NotFound(f"no job {self.job_id!r}")
        job = self._parse(state)
        if job is None:
            raise error_class("internal")(f"job {self.job_id}: malformed state {state!r}")
        return job

    def _snapshot_of(self, item: Message | Resync) -> Job | None:
        if isinstance(item, Resync):
            # The stream could not be replayed: continue from the job's current state.
            return self._initial(item.state)
        if not item.type.startswith("job."):
            return None
        return self._parse(item.data)

    def _parse(self, data: Any) -> Job | None:
        if not isinstance(data, Mapping):
            log.warning("job %s: ignoring a non-snapshot payload", self.job_id)
            return None
        try:
            job = Job.from_snapshot(data)
        except ValueError as exc:
            log.warning("job %s: ignoring %s", self.job_id, exc)
            return None
        if job.id != self.job_id:
            log.warning("job %s: ignoring a snapshot of job %s", self.job_id, job.id)
            return None
        return job

    async def _deliver(self, job: Job) -> Job:
        self.latest = job
        if job.terminal:
            await self.aclose()
        return job
