"""Jobs end to end: HTTP and sockets on real nodes, with the SDK on both sides.

A checkout backend creates the job over HTTP and hands the page its watch token; a worker
reports progress; the page watches over a socket (or polls). One node with SQLite and the
memory broker, and two nodes sharing Redis and one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import (
    Client,
    Conflict,
    CreatedJob,
    Job,
    JobStatus,
    Message,
    PermissionDenied,
    ServerAPI,
    TokenExpired,
)
from tests.support.databases import postgres_database
from tests.support.live import API_KEY, LiveServer, live_server, make_token, server_env
from tests.support.redis import broker_url, redis_prefix

WITHIN = 10.0  # seconds any single wait in these tests may take
# Every change a worker can make: (action, body).
CHANGES: list[tuple[str, Any]] = [
    ("progress", {"progress": 100}),
    ("complete", {"result": None}),
    ("fail", {"error": "too late"}),
    ("cancel", None),
]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def http(node: LiveServer, token: str | None = API_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=node.url, headers=headers, timeout=WITHIN)


def client(node: LiveServer, token: str) -> Client:
    return Client(node.url, token=token, reconnect_delay=0.05, reconnect_delay_max=0.3)


async def next_job_event(sub: Any, after: int = 0) -> Message:
    """The next job event on a subscription with a version above ``after``.

    Events are published from the outbox a few ms after the HTTP call returns, so the
    ``job.created`` of a job created just before subscribing may still arrive after the
    subscribe's state: watchers skip such stale versions, and so do these tests.
    """
    async with asyncio.timeout(WITHIN):
        while True:
            item = await anext(sub)
            assert isinstance(item, Message), item
            assert item.type.startswith("job."), item
            if item.data["version"] > after:
                return item


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """Assert the status and the error body; return the message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "retryable"}, error
    assert error["code"] == code and error["retryable"] is False, error
    assert isinstance(error["message"], str) and error["message"], error
    message: str = error["message"]
    return message


# -- one node ---------------------------------------------------------------------------------


async def test_page_watches_with_its_watch_token_and_polling_matches(server: LiveServer) -> None:
    owner = new_id("shopper")
    async with ServerAPI(server.url, API_KEY) as api:
        created = await api.jobs.create(owner, "checkout", watch_ttl=600)
        job_id = created.job.id
        assert created.watch_token_expires_at > time.time() + 500
        async with (
            client(server, created.watch_token) as page,
            page.subscribe(f"job:{job_id}") as sub,
            http(server, created.watch_token) as poll,
        ):
            # On subscribe the page gets the snapshot the poll returns.
            assert sub.state == (await poll.get(f"/api/jobs/{job_id}")).json()
            assert Job.from_snapshot(sub.state) == created.job

            pushed: list[dict[str, Any]] = []
            steps = [
                ("progress", {"progress": 20, "stage": "reserving", "message": "Reserving"}),
                ("progress", {"progress": 60, "stage": "charging"}),
                ("progress", {"progress": 90, "stage": "fulfilling", "message": "Packing"}),
                ("complete", {"result": {"receipt": "r-1", "total": 4200}}),
            ]
            async with http(server) as worker:
                for action, body in steps:
                    response = await worker.post(f"/api/jobs/{job_id}/{action}", json=body)
                    assert response.status_code == 200, response.text
                    msg = await next_job_event(sub, after=len(pushed) + 1)
                    # What the worker got back, what was pushed and what a poll returns now
                    # are one and the same snapshot.
                    assert msg.data == response.json()
                    polled = await poll.get(f"/api/jobs/{job_id}")
                    assert polled.status_code == 200, polled.text
                    assert polled.json() == msg.data
                    pushed.append(msg.data)
            assert [p["version"] for p in pushed] == [2, 3, 4, 5]
            assert [p["status"] for p in pushed] == ["processing"] * 3 + ["completed"]
            assert pushed[-1]["result"] == {"receipt": "r-1", "total": 4200}
            assert pushed[-1]["stage"] == "fulfilling" and pushed[-1]["progress"] == 100

        # A page arriving late gets the final state at once, over the socket or the poll.
        async with client(server, created.watch_token) as late:
            final = await late.jobs.wait(job_id, timeout=WITHIN)
        assert final == Job.from_snapshot(pushed[-1]) == await api.jobs.get(job_id)


async def test_sdk_watcher_and_worker_end_to_end(server: LiveServer) -> None:
    owner = new_id("buyer")
    async with ServerAPI(server.url, API_KEY) as api:
        created = await api.jobs.create(owner, "checkout")
        seen: list[Job] = []
        first = asyncio.Event()

        def on_progress(job: Job) -> None:
            seen.append(job)
            first.set()

        async with client(server, created.watch_token) as page:
            waiting = asyncio.create_task(
                page.jobs.wait(created.job.id, on_progress=on_progress, timeout=WITHIN)
            )
            async with asyncio.timeout(WITHIN):
                await first.wait()
            async with api.jobs.report(created.job.id) as job:
                for percent, stage in ((25, "reserve"), (50, "charge"), (75, "fulfil")):
                    await job.progress(percent, stage=stage)
                job.result = {"order": owner}
            final = await waiting
        assert [j.version for j in seen] == [1, 2, 3, 4, 5]
        assert [j.stage for j in seen] == [None, "reserve", "charge", "fulfil", "fulfil"]
        assert final.status is JobStatus.COMPLETED and final.result == {"order": owner}
        async with http(server, created.watch_token) as poll:
            assert Job.from_snapshot((await poll.get(f"/api/jobs/{final.id}")).json()) == final


async def test_owner_channel_receives_the_same_events(server: LiveServer) -> None:
    owner = new_id("dash")
    async with (
        ServerAPI(server.url, API_KEY) as api,
        client(server, server.token(owner)) as dashboard,
        dashboard.subscribe(f"user:{owner}") as mine,
    ):
        created = await api.jobs.create(owner, "export")
        job_id = created.job.id
        on_user = [await next_job_event(mine)]  # subscribed before: it sees the creation
        assert on_user[0].type == "job.created"
        assert Job.from_snapshot(on_user[0].data) == created.job
        async with dashboard.subscribe(f"job:{job_id}") as job_sub:
            await api.jobs.progress(job_id, 50, stage="half")
            await api.jobs.fail(job_id, "disk full", code="no_space")
            on_job = [await next_job_event(job_sub) for _ in range(2)]
        on_user += [await next_job_event(mine) for _ in range(2)]
        # The same events, with the same snapshots, on both channels.
        assert [(m.type, m.data) for m in on_user[1:]] == [(m.type, m.data) for m in on_job]
        assert [m.type for m in on_user] == ["job.created", "job.progress", "job.failed"]
        assert [m.data["version"] for m in on_user] == [1, 2, 3]
        assert {m.channel for m in on_user} == {f"user:{owner}"}
        assert {m.channel for m in on_job} == {f"job:{job_id}"}
        assert on_user[-1].data["error"] == {"code": "no_space", "message": "disk full"}

        # The owner may read, list and cancel their own jobs over HTTP with their token.
        other = (await api.jobs.create(owner, "export")).job.id
        async with http(server, server.token(owner)) as user:
            assert (await user.get(f"/api/jobs/{other}")).json()["status"] == "pending"
            listed = (await user.get("/api/jobs")).json()["jobs"]
            assert {j["id"] for j in listed} == {job_id, other}
            cancelled = await user.post(f"/api/jobs/{other}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert [(await next_job_event(mine)).type for _ in range(2)] == [
            "job.created",
            "job.cancelled",
        ]


async def test_another_users_job_is_denied(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        created = await api.jobs.create(new_id("owner"), "checkout")
        job_id = created.job.id
    mallory = server.token(new_id("mallory"))
    async with client(server, mallory) as other:
        with pytest.raises(PermissionDenied) as denied:
            async with other.subscribe(f"job:{job_id}"):
                pass
        assert denied.value.code == "permission_denied"
        with pytest.raises(PermissionDenied):
            await other.jobs.wait(job_id, timeout=WITHIN)
        # An unknown job looks the same as someone else's: existence does not leak.
        with pytest.raises(PermissionDenied):
            await other.jobs.wait(new_id("nobody"), timeout=WITHIN)
        assert other.connected
    async with http(server, mallory) as user:
        error_of(await user.get(f"/api/jobs/{job_id}"), 403, "permission_denied")
        error_of(await user.post(f"/api/jobs/{job_id}/cancel"), 403, "permission_denied")
        error_of(
            await user.get("/api/jobs", params={"owner": created.job.owner}),
            403,
            "permission_denied",
        )


async def test_watch_token_works_only_for_its_own_job(server: LiveServer) -> None:
    owner = new_id("owner")
    async with ServerAPI(server.url, API_KEY) as api:
        mine = await api.jobs.create(owner, "checkout")
        theirs = await api.jobs.create(owner, "checkout")  # same owner, another job
    token = mine.watch_token
    async with client(server, token) as page:
        async with page.subscribe(f"job:{mine.job.id}") as sub:
            assert sub.state["id"] == mine.job.id
        for channel in (f"job:{theirs.job.id}", f"user:{owner}"):
            with pytest.raises(PermissionDenied):
                async with page.subscribe(channel):
                    pass
    async with http(server, token) as poll:
        assert (await poll.get(f"/api/jobs/{mine.job.id}")).status_code == 200
        error_of(await poll.get(f"/api/jobs/{theirs.job.id}"), 403, "permission_denied")
        # It reads; it does not report, cancel or list.
        error_of(
            await poll.post(f"/api/jobs/{mine.job.id}/progress", json={"progress": 5}),
            403,
            "permission_denied",
        )
        error_of(await poll.post(f"/api/jobs/{mine.job.id}/cancel"), 403, "permission_denied")
        error_of(await poll.get("/api/jobs", params={"owner": owner}), 403, "permission_denied")


async def test_watch_token_expires(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        job_id = (await api.jobs.create(new_id("owner"), "checkout")).job.id
    # A watch token like the one the API mints, but living three seconds (long enough to
    # connect and poll once on a loaded CI machine).
    token = make_token(f"watch:{job_id}", ttl=3.0, channels=[f"job:{job_id}"])
    started = time.monotonic()
    async with client(server, token) as page, http(server, token) as poll:
        assert (await poll.get(f"/api/jobs/{job_id}")).status_code == 200
        # The watch works until the token expires; then the server drops the connection with
        # token_expired and, with a plain token, the client gives up and the wait says why.
        with pytest.raises(TokenExpired) as expired:
            await page.jobs.wait(job_id, timeout=WITHIN)
        assert expired.value.code == "token_expired"
        assert 0.5 < time.monotonic() - started < 8
        message = error_of(await poll.get(f"/api/jobs/{job_id}"), 401, "token_expired")
        assert "expired" in message
    with pytest.raises(TokenExpired):
        async with client(server, token):
            pass


async def test_http_error_codes(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        owner = new_id("owner")
        job_id = (await api.jobs.create(owner, "checkout")).job.id
        done = (await api.jobs.create(owner, "checkout")).job.id
        await api.jobs.complete(done)
    missing = new_id("missing")
    async with http(server) as worker:

        async def post(job: str, action: str, body: Any = None) -> httpx.Response:
            return await worker.post(f"/api/jobs/{job}/{action}", json=body)

        assert (await post(job_id, "progress", {"progress": 50})).status_code == 200
        # 422: out of range, wrong types, unknown or missing fields, bad create bodies.
        for body in (
            {"progress": 101},
            {"progress": -1},
            {"progress": "50"},
            {"progress": 50.5},
            {"progress": 60, "colour": "red"},
            {"stage": "x"},
            {"progress": 60, "stage": ""},
            {"progress": 60, "message": "m" * 513},
        ):
            error_of(await post(job_id, "progress", body), 422, "invalid_payload")
        error_of(await post(job_id, "fail", {}), 422, "invalid_payload")
        error_of(await post(job_id, "fail", {"error": {"code": "x"}}), 422, "invalid_payload")
        error_of(await post(job_id, "complete", [1]), 422, "invalid_payload")
        for body in (
            {"owner": owner},
            {"owner": owner, "kind": "k", "id": "not valid"},
            {"owner": owner, "kind": "k", "watch_ttl": 10},
            {"owner": "", "kind": "k"},
        ):
            error_of(await worker.post("/api/jobs", json=body), 422, "invalid_payload")
        bad_json = await worker.post(
            f"/api/jobs/{job_id}/progress",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        error_of(bad_json, 422, "invalid_payload")
        # 409: backwards progress, and any change once terminal.
        assert "cannot go back" in error_of(
            await post(job_id, "progress", {"progress": 49}), 409, "conflict"
        )
        for action, payload in CHANGES:
            error_of(await post(done, action, payload), 409, "conflict")
        # 404: unknown job, whatever the call.
        error_of(await worker.get(f"/api/jobs/{missing}"), 404, "not_found")
        for action, payload in CHANGES:
            error_of(await post(missing, action, payload), 404, "not_found")
        # Nothing refused above changed the job.
        snapshot = (await worker.get(f"/api/jobs/{job_id}")).json()
        assert (snapshot["version"], snapshot["progress"]) == (2, 50)
    # 403: a user token on worker endpoints (even the owner's), another user's job.
    async with http(server, server.token(owner)) as user:
        error_of(
            await user.post(f"/api/jobs/{job_id}/progress", json={"progress": 60}),
            403,
            "permission_denied",
        )
        error_of(
            await user.post("/api/jobs", json={"owner": owner, "kind": "k"}),
            403,
            "permission_denied",
        )
    async with http(server, server.token("someone-else")) as stranger:
        error_of(await stranger.get(f"/api/jobs/{job_id}"), 403, "permission_denied")
    # 401: no credentials, or a bad key.
    async with http(server, None) as anonymous, http(server, "wrong-key") as wrong:
        error_of(await anonymous.get(f"/api/jobs/{job_id}"), 401, "unauthorized")
        error_of(
            await wrong.post("/api/jobs", json={"owner": owner, "kind": "k"}), 401, "unauthorized"
        )


async def test_duplicate_job_id_is_a_conflict(server: LiveServer) -> None:
    job_id = new_id("dup")
    async with http(server) as worker:
        first = await worker.post("/api/jobs", json={"owner": "a", "kind": "k", "id": job_id})
        assert first.status_code == 201, first.text
    async with http(server) as worker:
        again = await worker.post("/api/jobs", json={"owner": "b", "kind": "k", "id": job_id})
        error_of(again, 409, "conflict")
    async with http(server) as worker:
        assert (await worker.get(f"/api/jobs/{job_id}")).json()["owner"] == "a"
    async with ServerAPI(server.url, API_KEY, max_attempts=2, backoff=0.01) as api:
        with pytest.raises(Conflict):
            await api.jobs.create("b", "k", id=job_id)


# -- two nodes, one Redis, one PostgreSQL -----------------------------------------------------


async def test_watcher_on_one_node_worker_on_another(tmp_path: Path) -> None:
    async with redis_prefix() as prefix:
        with postgres_database() as database_url:
            env = {"TANDEM_BROKER_URL": broker_url(prefix), "TANDEM_DATABASE_URL": database_url}
            await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "server", "migrate"],
                env=server_env(tmp_path, env),
                cwd=tmp_path,
                check=True,
                capture_output=True,
                timeout=60,
            )
            with (
                live_server(tmp_path / "a", env) as node_a,
                live_server(tmp_path / "b", env) as node_b,
            ):
                await _watch_across_nodes(node_a, node_b)


async def _watch_across_nodes(node_a: LiveServer, node_b: LiveServer) -> None:
    owner = new_id("multi")
    steps = 20
    seen: list[Job] = []
    first = asyncio.Event()

    def on_progress(job: Job) -> None:
        seen.append(job)
        first.set()

    async with (
        ServerAPI(node_b.url, API_KEY) as worker_b,
        client(node_a, node_a.token(owner)) as dashboard,
        dashboard.subscribe(f"user:{owner}") as mine,
    ):
        created: CreatedJob = await worker_b.jobs.create(owner, "checkout")
        job_id = created.job.id
        async with client(node_a, created.watch_token) as page:
            waiting = asyncio.create_task(
                page.jobs.wait(job_id, on_progress=on_progress, timeout=WITHIN * 2)
            )
            async with asyncio.timeout(WITHIN):
                await first.wait()
            async with worker_b.jobs.report(job_id) as job:
                for i in range(1, steps + 1):
                    await job.progress(i * 100 // (steps + 1), stage=f"step-{i}")
                job.result = {"steps": steps}
            final = await waiting
        on_user = [await next_job_event(mine) for _ in range(steps + 2)]

        # Every version, in order, then the final state, on node A.
        assert [job.version for job in seen] == list(range(1, steps + 3))
        assert final == seen[-1]
        assert final.status is JobStatus.COMPLETED and final.result == {"steps": steps}
        assert [Job.from_snapshot(m.data) for m in on_user] == seen
        # Both nodes read the same row: the poll on A equals what B's worker got back.
        async with http(node_a, created.watch_token) as poll:
            assert Job.from_snapshot((await poll.get(f"/api/jobs/{job_id}")).json()) == final
        assert await worker_b.jobs.get(job_id) == final
