"""Jobs through the SDK: the worker's `api.jobs` and `report()`, the watcher's `wait`/`watch`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest

from client_sdk import (
    ClientClosed,
    Conflict,
    CreatedJob,
    InvalidPayload,
    Job,
    JobCancelled,
    JobErrorInfo,
    JobFailed,
    JobStatus,
    JobUnsuccessful,
    JobWatcher,
    Message,
    NotFound,
    PermissionDenied,
    Resync,
    ServerAPI,
    TandemError,
)
from tests.client_sdk.helpers import eventually, fast_client, wait_disconnected
from tests.support.live import API_KEY, LiveServer
from tests.support.proxy import TcpProxy

WITHIN = 10.0  # seconds any single wait in these tests may take


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def worker(server: LiveServer, **options: Any) -> AsyncIterator[ServerAPI]:
    async with ServerAPI(server.url, API_KEY, **options) as api:
        yield api


async def create(api: ServerAPI, prefix: str, owner: str = "alice") -> CreatedJob:
    return await api.jobs.create(owner, "checkout", id=new_id(prefix))


class FirstSeen:
    """An ``on_progress`` callback that records snapshots and tells when the first arrived."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.first = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.jobs.append(job)
        self.first.set()

    @property
    def versions(self) -> list[int]:
        return [job.version for job in self.jobs]

    async def wait_first(self) -> None:
        async with asyncio.timeout(WITHIN):
            await self.first.wait()


# -- worker side ------------------------------------------------------------------------------


async def test_report_completes_the_job_on_normal_exit(server: LiveServer) -> None:
    async with worker(server) as api:
        created = await create(api, "report-ok")
        assert created.job.status is JobStatus.PENDING and created.job.version == 1
        assert created.watch_token.count(".") == 2 and created.watch_token_expires_at > 0
        job_id = created.job.id
        async with api.jobs.report(job_id) as job:
            assert job.job == created.job
            first = await job.progress(40, stage="reserving", message="Reserving stock")
            assert (first.status, first.progress, first.stage, first.message) == (
                JobStatus.PROCESSING,
                40,
                "reserving",
                "Reserving stock",
            )
            second = await job.progress(70, stage="charging")
            assert (second.stage, second.message, second.version) == (
                "charging",
                "Reserving stock",  # None keeps the last message
                3,
            )
            job.result = {"receipt": "r-1"}
            assert not job.finished
        assert job.finished
        final = await api.jobs.get(job_id)
        assert final == job.job
        assert final.status is JobStatus.COMPLETED and final.terminal
        assert (final.progress, final.result, final.error, final.version) == (
            100,
            {"receipt": "r-1"},
            None,
            4,
        )
        assert final.updated_at >= final.created_at


async def test_report_fails_the_job_and_reraises(server: LiveServer) -> None:
    async with worker(server) as api:
        job_id = (await create(api, "report-fail")).job.id
        with pytest.raises(ValueError, match="card declined") as raised:
            async with api.jobs.report(job_id) as job:
                await job.progress(30, stage="charging")
                raise ValueError("card declined")
        assert not getattr(raised.value, "__notes__", None)
        failed = await api.jobs.get(job_id)
        assert failed == job.job
        assert failed.status is JobStatus.FAILED
        assert failed.error == JobErrorInfo("error", "card declined")
        assert (failed.progress, failed.stage, failed.version) == (30, "charging", 3)

        # An exception without text fails the job with its type name.
        other = (await create(api, "report-empty")).job.id
        with pytest.raises(RuntimeError):
            async with api.jobs.report(other):
                raise RuntimeError()
        assert (await api.jobs.get(other)).error == JobErrorInfo("error", "RuntimeError")

        # A cancelled worker task fails its job too, and stays cancelled.
        stopped = (await create(api, "report-cancelled-task")).job.id
        started = asyncio.Event()

        async def work() -> None:
            async with api.jobs.report(stopped) as job:
                await job.progress(10)
                started.set()
                await asyncio.sleep(WITHIN)

        task = asyncio.create_task(work())
        async with asyncio.timeout(WITHIN):
            await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await api.jobs.get(stopped)).error == JobErrorInfo("error", "CancelledError")

        # A very long text is cut to what the server accepts, and the job still fails.
        long = (await create(api, "report-long")).job.id
        with pytest.raises(KeyError):
            async with api.jobs.report(long):
                raise KeyError("x" * 2000)
        error = (await api.jobs.get(long)).error
        assert error is not None and len(error.message) == 512


async def test_report_explicit_outcome_makes_exit_do_nothing(server: LiveServer) -> None:
    async with worker(server) as api:
        done = (await create(api, "report-explicit")).job.id
        async with api.jobs.report(done) as job:
            completed = await job.complete({"ok": True})
        assert completed.status is JobStatus.COMPLETED and completed.result == {"ok": True}
        assert (await api.jobs.get(done)) == completed

        # Completed in the block, then the block raises: the exception propagates unmasked
        # (no conflict from trying to fail a completed job) and the job stays completed.
        raised_after = (await create(api, "report-then-raise")).job.id
        with pytest.raises(LookupError, match="after completing") as raised:
            async with api.jobs.report(raised_after) as job:
                await job.complete("done")
                raise LookupError("after completing")
        assert not getattr(raised.value, "__notes__", None)
        after = await api.jobs.get(raised_after)
        assert (after.status, after.result, after.version) == (JobStatus.COMPLETED, "done", 2)

        declined = (await create(api, "report-explicit-fail")).job.id
        async with api.jobs.report(declined) as job:
            await job.fail("card declined", code="card_declined")
        failed = await api.jobs.get(declined)
        assert failed.status is JobStatus.FAILED
        assert failed.error == JobErrorInfo("card_declined", "card declined")


async def test_report_when_the_job_is_cancelled_meanwhile(server: LiveServer) -> None:
    async with worker(server) as api:
        job_id = (await create(api, "report-cancelled")).job.id
        # The owner cancels; the block then fails: the block's exception wins over the 409
        # from marking the job failed, with a note saying the job could not be marked.
        with pytest.raises(ZeroDivisionError) as raised:
            async with api.jobs.report(job_id) as job:
                await job.progress(10)
                await api.jobs.cancel(job_id)
                _ = 1 / 0
        notes = getattr(raised.value, "__notes__", [])
        assert len(notes) == 1 and "could not be marked failed" in notes[0], notes
        assert (await api.jobs.get(job_id)).status is JobStatus.CANCELLED

        # Cancelled, then the block ends normally: completing is a conflict, said loudly.
        quiet = (await create(api, "report-cancelled-ok")).job.id
        with pytest.raises(Conflict):
            async with api.jobs.report(quiet):
                await api.jobs.cancel(quiet)
        assert (await api.jobs.get(quiet)).status is JobStatus.CANCELLED


async def test_report_refuses_unknown_and_finished_jobs(server: LiveServer) -> None:
    async with worker(server) as api:
        with pytest.raises(NotFound):
            async with api.jobs.report(new_id("missing")):
                raise AssertionError("not reached")
        job_id = (await create(api, "report-finished")).job.id
        await api.jobs.complete(job_id)
        with pytest.raises(Conflict, match="already completed"):
            async with api.jobs.report(job_id):
                raise AssertionError("not reached")
        report = api.jobs.report((await create(api, "report-twice")).job.id)
        async with report:
            pass
        with pytest.raises(RuntimeError, match="only once"):
            async with report:
                pass


async def test_worker_api_errors_are_typed(server: LiveServer) -> None:
    async with worker(server) as api:
        job_id = (await create(api, "typed")).job.id
        await api.jobs.progress(job_id, 50)
        with pytest.raises(Conflict, match="cannot go back") as backwards:
            await api.jobs.progress(job_id, 40)
        assert backwards.value.code == "conflict" and backwards.value.retryable is False
        for bad in (101, -1):
            with pytest.raises(InvalidPayload):
                await api.jobs.progress(job_id, bad)
        with pytest.raises(InvalidPayload):
            await api.jobs.progress(job_id, True)  # a bool is not a percentage
        with pytest.raises(InvalidPayload):
            await api.jobs.create("alice", "checkout", id="has space")
        with pytest.raises(InvalidPayload):
            await api.jobs.create("alice", "checkout", watch_ttl=5)
        with pytest.raises(InvalidPayload):
            await api.jobs.fail(job_id, "")
        assert (await api.jobs.get(job_id)).version == 2  # refused calls changed nothing

        await api.jobs.complete(job_id, [1, 2])
        for change in (
            lambda: api.jobs.progress(job_id, 100),
            lambda: api.jobs.complete(job_id),
            lambda: api.jobs.fail(job_id, "late"),
            lambda: api.jobs.cancel(job_id),
        ):
            with pytest.raises(Conflict, match="is completed"):
                await change()

        missing = new_id("missing")
        for call in (
            lambda: api.jobs.get(missing),
            lambda: api.jobs.progress(missing, 1),
            lambda: api.jobs.complete(missing),
            lambda: api.jobs.fail(missing, "x"),
            lambda: api.jobs.cancel(missing),
        ):
            with pytest.raises(NotFound):
                await call()


async def test_create_get_list_and_cancel(server: LiveServer) -> None:
    owner = new_id("lister")
    async with worker(server) as api:
        first = await api.jobs.create(owner, "export", watch_ttl=60)
        second = await api.jobs.create(owner, "import", id=new_id("given"))
        assert second.job.id.startswith("given-") and first.job.id
        assert first.job.owner == owner and first.job.kind == "export"
        assert (await api.jobs.get(first.job.id)) == first.job
        listed = await api.jobs.list(owner)
        assert {job.id for job in listed} == {first.job.id, second.job.id}
        assert len(await api.jobs.list(owner, limit=1)) == 1
        assert await api.jobs.list(new_id("nobody")) == []
        cancelled = await api.jobs.cancel(first.job.id)
        assert cancelled.status is JobStatus.CANCELLED and cancelled.version == 2
        # Every character a job id may hold survives the URL.
        odd = (await api.jobs.create(owner, "odd", id=new_id("a.b@c=d+e_f"))).job.id
        assert (await api.jobs.progress(odd, 1)).id == odd
        assert (await api.jobs.get(odd)).version == 2


class LoseReplies(httpx.AsyncBaseTransport):
    """Forwards every request; the first one to a path ending in ``suffix`` reaches the server
    but its reply is lost (as if the connection dropped), or is answered 503 unsent."""

    def __init__(self, suffix: str, *, refuse: bool = False) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._suffix = suffix
        self._refuse = refuse
        self.tripped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        trip = request.url.path.endswith(self._suffix) and not self.tripped
        if trip and self._refuse:
            self.tripped += 1
            body = {"error": {"code": "broker_unavailable", "message": "x", "retryable": True}}
            return httpx.Response(503, json=body, headers={"Retry-After": "0"})
        response = await self._inner.handle_async_request(request)
        if trip:
            self.tripped += 1
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("the reply was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_retried_outcome_whose_first_attempt_went_through(server: LiveServer) -> None:
    fast = {"backoff": 0.01, "backoff_max": 0.05}
    async with worker(server) as direct:
        # complete: the first attempt commits, its reply is lost, the retry gets 409; the SDK
        # reads the job back, sees its own result, and reports success.
        job_id = (await create(direct, "lost-complete")).job.id
        lossy = LoseReplies("/complete")
        async with worker(server, transport=lossy, **fast) as api:
            async with api.jobs.report(job_id) as job:
                await job.progress(90)
                job.result = {"n": 1}
        assert lossy.tripped == 1
        final = await direct.jobs.get(job_id)
        assert (final.status, final.result, final.version) == (JobStatus.COMPLETED, {"n": 1}, 3)

        # fail, the same way.
        job_id = (await create(direct, "lost-fail")).job.id
        lossy = LoseReplies("/fail")
        async with worker(server, transport=lossy, **fast) as api:
            failed = await api.jobs.fail(job_id, "no stock", code="out_of_stock")
        assert lossy.tripped == 1 and failed.error == JobErrorInfo("out_of_stock", "no stock")

        # A genuine conflict stays a conflict even after a retry.
        job_id = (await create(direct, "lost-other")).job.id
        await direct.jobs.complete(job_id, "someone else's")
        lossy = LoseReplies("/complete", refuse=True)
        async with worker(server, transport=lossy, **fast) as api:
            with pytest.raises(Conflict):
                await api.jobs.complete(job_id, "mine")
        assert lossy.tripped == 1

        # progress goes through the retries on 503 too.
        job_id = (await create(direct, "retry-progress")).job.id
        lossy = LoseReplies("/progress", refuse=True)
        async with worker(server, transport=lossy, **fast) as api:
            assert (await api.jobs.progress(job_id, 5)).version == 2
        assert lossy.tripped == 1


# -- watcher side -----------------------------------------------------------------------------


async def test_wait_reports_every_version_and_returns_the_completed_job(
    server: LiveServer,
) -> None:
    async with worker(server) as api:
        created = await create(api, "wait-ok")
        job_id = created.job.id
        seen = FirstSeen()
        async with fast_client(server.url, created.watch_token) as client:
            waiting = asyncio.create_task(
                client.jobs.wait(job_id, on_progress=seen, timeout=WITHIN)
            )
            await seen.wait_first()
            async with api.jobs.report(job_id) as job:
                for percent in (10, 40, 80):
                    await job.progress(percent, stage=f"step-{percent}")
                job.result = {"receipt": "r-9"}
            final = await waiting
        assert final.status is JobStatus.COMPLETED and final.result == {"receipt": "r-9"}
        assert seen.versions == [1, 2, 3, 4, 5]
        assert [job.progress for job in seen.jobs] == [0, 10, 40, 80, 100]
        assert seen.jobs[-1] == final == await api.jobs.get(job_id)


async def test_wait_raises_job_failed_and_job_cancelled(server: LiveServer) -> None:
    async with worker(server) as api, fast_client(server.url, server.token("alice")) as client:
        job_id = (await create(api, "wait-fail")).job.id
        calls: list[int] = []
        waiting = asyncio.create_task(
            client.jobs.wait(job_id, on_progress=lambda job: calls.append(job.version))
        )
        await eventually(lambda: calls == [1])
        await api.jobs.progress(job_id, 20)
        await api.jobs.fail(job_id, "card declined", code="card_declined")
        with pytest.raises(JobFailed) as failed:
            await asyncio.wait_for(waiting, WITHIN)
        assert isinstance(failed.value, JobUnsuccessful)
        assert not isinstance(failed.value, TandemError)
        assert failed.value.job.status is JobStatus.FAILED and failed.value.job.version == 3
        assert failed.value.error == JobErrorInfo("card_declined", "card declined")
        assert "card declined" in str(failed.value)
        assert calls == [1, 2, 3]

        cancelled = (await create(api, "wait-cancel")).job.id
        seen = FirstSeen()
        waiting = asyncio.create_task(client.jobs.wait(cancelled, on_progress=seen, timeout=WITHIN))
        await seen.wait_first()  # the waiter has the job's first snapshot: it is watching
        await api.jobs.cancel(cancelled)
        with pytest.raises(JobCancelled) as stopped:
            await waiting
        assert stopped.value.job.status is JobStatus.CANCELLED


async def test_watch_yields_snapshots_ending_with_the_final_one(server: LiveServer) -> None:
    async with worker(server) as api, fast_client(server.url, server.token("alice")) as client:
        job_id = (await create(api, "watch")).job.id
        seen: list[Job] = []
        async with asyncio.timeout(WITHIN):
            async for job in client.jobs.watch(job_id):
                seen.append(job)
                if job.version == 1:
                    await api.jobs.progress(job_id, 50, stage="charging")
                    await api.jobs.progress(job_id, 75)
                    await api.jobs.complete(job_id, "ok")
        assert [(job.version, job.status, job.progress) for job in seen] == [
            (1, JobStatus.PENDING, 0),
            (2, JobStatus.PROCESSING, 50),
            (3, JobStatus.PROCESSING, 75),
            (4, JobStatus.COMPLETED, 100),
        ]
        assert seen[-1].stage == "charging" and seen[-1].result == "ok"
        # The watch unsubscribed after the final snapshot: the channel is free again.
        async with client.subscribe(f"job:{job_id}") as sub:
            assert sub.state["version"] == 4


async def test_wait_on_a_finished_job_returns_at_once(server: LiveServer) -> None:
    async with worker(server) as api, fast_client(server.url, server.token("alice")) as client:
        job_id = (await create(api, "finished")).job.id
        completed = await api.jobs.complete(job_id, {"done": True})
        calls: list[Job] = []
        async with asyncio.timeout(2):
            assert await client.jobs.wait(job_id, on_progress=calls.append) == completed
        assert calls == [completed]
        assert [job async for job in client.jobs.watch(job_id)] == [completed]

        failed_id = (await create(api, "finished-failed")).job.id
        await api.jobs.fail(failed_id, "boom")
        with pytest.raises(JobFailed):
            await client.jobs.wait(failed_id, timeout=2)


async def test_watcher_errors(server: LiveServer) -> None:
    async with worker(server) as api:
        job_id = (await create(api, "watch-errors")).job.id
        async with fast_client(server.url, server.token("bob")) as bob:
            with pytest.raises(PermissionDenied):
                await bob.jobs.wait(job_id, timeout=WITHIN)
        async with fast_client(server.url, server.token("ops", scope="admin")) as admin:
            with pytest.raises(NotFound):
                await admin.jobs.wait(new_id("missing"), timeout=WITHIN)
            with pytest.raises(TimeoutError):
                await admin.jobs.wait(job_id, timeout=0.3)
            # Stopping early releases the subscription.
            async with admin.jobs.watch(job_id) as updates:
                assert (await anext(updates)).version == 1
            with pytest.raises(StopAsyncIteration):
                await anext(updates)
            updates = admin.jobs.watch(job_id)
            assert (await anext(updates)).version == 1
            await updates.aclose()
            # The watch on the same channel is possible again, to the end.
            finish = _complete_on_first(api, job_id)
            final = await admin.jobs.wait(job_id, on_progress=finish, timeout=WITHIN)
            assert final.status is JobStatus.COMPLETED


async def test_wait_survives_a_dropped_connection(server: LiveServer) -> None:
    async with (
        worker(server) as api,
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, server.token("alice")) as client,
    ):
        job_id = (await create(api, "reconnect")).job.id
        seen = FirstSeen()
        waiting = asyncio.create_task(client.jobs.wait(job_id, on_progress=seen, timeout=WITHIN))
        await seen.wait_first()
        await api.jobs.progress(job_id, 30)
        await eventually(lambda: seen.versions == [1, 2])
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        await api.jobs.progress(job_id, 60)
        await api.jobs.complete(job_id, "after the drop")
        await eventually(lambda: proxy.refused >= 1)  # a reconnect attempt failed meanwhile
        proxy.resume()
        final = await waiting
        assert final.result == "after the drop"
        assert seen.versions == [1, 2, 3, 4]  # replayed from where the watcher was


# -- stale snapshots (a scripted subscription) -----------------------------------------------


def snapshot(version: int, *, job_id: str = "j1", status: str = "processing") -> dict[str, Any]:
    return {
        "id": job_id,
        "owner": "alice",
        "kind": "checkout",
        "status": status,
        "progress": min(version * 10, 100),
        "stage": None,
        "message": None,
        "result": None,
        "error": None,
        "version": version,
        "created_at": "2030-01-01T00:00:00+00:00",
        "updated_at": "2030-01-01T00:00:01+00:00",
    }


class ScriptedSubscription:
    def __init__(self, state: Any, items: Iterable[Message | Resync]) -> None:
        self.state = state
        self._items = list(items)
        self.unsubscribed = False

    async def __aenter__(self) -> ScriptedSubscription:
        return self

    async def __anext__(self) -> Message | Resync:
        if self._items:
            return self._items.pop(0)
        raise StopAsyncIteration

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class ScriptedClient:
    def __init__(self, sub: ScriptedSubscription) -> None:
        self.sub = sub
        self.channels: list[str] = []

    def subscribe(self, channel: str) -> ScriptedSubscription:
        self.channels.append(channel)
        return self.sub


def event(offset: int, data: Any, kind: str = "job.progress") -> Message:
    return Message("job:j1", kind, offset, "e1", 0.0, data)


def scripted(state: Any, *items: Message | Resync) -> tuple[JobWatcher, ScriptedClient]:
    client = ScriptedClient(ScriptedSubscription(state, items))
    return JobWatcher(cast(Any, client)), client


async def test_stale_and_foreign_snapshots_are_never_delivered() -> None:
    watcher, client = scripted(
        snapshot(2),
        event(1, snapshot(1)),  # older than the state
        event(2, snapshot(2)),  # the state itself
        event(3, snapshot(3)),
        event(4, snapshot(5)),  # a newer one overtook 4
        event(5, snapshot(4)),  # so 4 is stale now
        Resync("job:j1", "e2", 9, snapshot(4)),  # a resync to a stale state
        event(10, {"not": "a job"}),
        event(11, snapshot(6, job_id="other")),
        event(12, "garbage"),
        event(13, snapshot(6), kind="chat.message"),
        Resync("job:j1", "e3", 20, snapshot(6)),  # a resync to a newer state
        event(21, snapshot(7, status="completed"), kind="job.completed"),
        event(22, snapshot(8)),  # never read: the watch ended
    )
    updates = watcher.watch("j1")
    seen = [job async for job in updates]
    assert [job.version for job in seen] == [2, 3, 5, 6, 7]
    assert seen[-1].terminal and updates.latest == seen[-1]
    assert client.channels == ["job:j1"] and client.sub.unsubscribed
    with pytest.raises(StopAsyncIteration):
        await anext(updates)


async def test_a_watch_without_an_end_or_a_job_is_an_error() -> None:
    watcher, client = scripted(snapshot(1, status="pending"), event(2, snapshot(2)))
    seen: list[int] = []
    with pytest.raises(ClientClosed):
        await watcher.wait("j1", on_progress=lambda job: seen.append(job.version))
    assert seen == [1, 2] and client.sub.unsubscribed

    watcher, client = scripted(None)
    with pytest.raises(NotFound):
        await watcher.wait("j1")
    assert client.sub.unsubscribed

    watcher, client = scripted(snapshot(1), Resync("job:j1", "e2", 3, None))
    with pytest.raises(NotFound):
        await watcher.wait("j1")
    assert client.sub.unsubscribed


def test_job_snapshot_parsing() -> None:
    job = Job.from_snapshot(snapshot(3, status="failed") | {"error": {"code": "c", "message": "m"}})
    assert job.status is JobStatus.FAILED and str(job.status) == "failed" and job.terminal
    assert job.error == JobErrorInfo("c", "m")
    assert job.created_at.tzinfo is not None
    assert not Job.from_snapshot(snapshot(1, status="pending")).terminal
    for broken in (
        snapshot(1) | {"status": "exploded"},
        snapshot(1) | {"version": "1"},
        snapshot(1) | {"progress": True},
        snapshot(1) | {"created_at": "yesterday"},
        snapshot(1) | {"error": {"code": "c"}},
        {k: v for k, v in snapshot(1).items() if k != "owner"},
    ):
        with pytest.raises(ValueError):
            Job.from_snapshot(broken)


# -- helpers ----------------------------------------------------------------------------------


def _complete_on_first(api: ServerAPI, job_id: str) -> Any:
    async def callback(job: Job) -> None:
        if not job.terminal:
            await api.jobs.complete(job_id)

    return callback
