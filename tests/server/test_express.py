"""The express lane (server.api.fast_lane) answers exactly as the FastAPI routes it shadows.

The same requests go to two fresh nodes, one through the whole application (where the express
lane takes them) and one straight to FastAPI (the documented routes), and must get the same
statuses, bodies and Retry-After headers, once per-node values (epochs, timestamps) are set
aside.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import TandemApp, create_app
from server.config import Settings
from storage.migrate import upgrade
from tests.support.live import API_KEY, TEST_SECRET, make_token

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# Time-stamped values: the two nodes answer a second apart when the run straddles one.
PER_NODE = {"epoch", "created_at", "updated_at", "watch_token", "watch_token_expires_at"}

Case = tuple[str, dict[str, str], Any]  # path, headers, JSON body (bytes: sent as is)


def cases() -> list[tuple[str, list[Case], bool]]:
    """(name, requests in order, compare messages exactly)."""
    user = {"Authorization": f"Bearer {make_token('alice', channels=['room:mine'])}"}
    publish = "/api/publish"
    batch = "/api/publish/batch"
    ok = {"channel": "room:x", "event": "chat.message", "data": {"n": 1}}
    items = [{"channel": f"room:b{i % 2}", "event": "a.b", "data": i} for i in range(4)]
    job = "/api/jobs/parity-1"
    return [
        ("publish", [(publish, AUTH, ok), (publish, AUTH, {**ok, "data": "é ✓"})], True),
        (
            "idempotent",
            [(publish, {**AUTH, "Idempotency-Key": "k1"}, ok)] * 2 + [(publish, AUTH, ok)],
            True,
        ),
        ("durable", [(publish, AUTH, {**ok, "durable": True})], True),
        ("no credentials", [(publish, {}, ok)], True),
        ("bad token", [(publish, {"Authorization": "Bearer nope"}, ok)], True),
        ("scheme", [(publish, {"Authorization": f"Basic {API_KEY}"}, ok)], True),
        ("user may not", [(publish, user, ok)], True),
        ("user may", [(publish, user, {**ok, "channel": "room:mine"})], True),
        (
            "user reserved",
            [(publish, user, {**ok, "channel": "room:mine", "event": "job.x"})],
            True,
        ),
        ("missing event", [(publish, AUTH, {"channel": "room:x"})], True),
        ("extra field", [(publish, AUTH, {**ok, "extra": 1})], True),
        ("bad event", [(publish, AUTH, {**ok, "event": "no spaces"})], True),
        ("bad types", [(publish, AUTH, {"channel": 5, "event": ["x"], "durable": "no"})], True),
        ("unknown channel", [(publish, AUTH, {**ok, "channel": "nope:a"})], True),
        ("bad channel", [(publish, AUTH, {**ok, "channel": "room:a b"})], True),
        ("server event", [(publish, AUTH, {**ok, "event": "server.notice"})], True),
        ("too large", [(publish, AUTH, {**ok, "data": "x" * 70_000})], True),
        ("long key", [(publish, {**AUTH, "Idempotency-Key": "k" * 129}, ok)], True),
        ("long key and body", [(publish, {**AUTH, "Idempotency-Key": "k" * 129}, {})], True),
        ("not json", [(publish, AUTH, b"{not json")], False),
        ("not an object", [(publish, AUTH, [1, 2])], False),
        ("empty body", [(publish, AUTH, b"")], False),
        ("batch", [(batch, AUTH, {"publications": items})], True),
        (
            "batch keyed",
            [(batch, {**AUTH, "Idempotency-Key": "b"}, {"publications": items})] * 2,
            True,
        ),
        ("batch durable", [(batch, AUTH, {"publications": items, "durable": True})], True),
        ("batch user", [(batch, user, {"publications": items})], True),
        ("batch empty", [(batch, AUTH, {"publications": []})], True),
        ("batch over", [(batch, AUTH, {"publications": [items[0]] * 101})], True),
        ("batch bad item", [(batch, AUTH, {"publications": [items[0], {"channel": "x"}]})], True),
        ("batch same id", [(batch, AUTH, {"publications": [{**items[0], "id": "i"}] * 2})], True),
        (
            "job lifecycle",
            [
                ("/api/jobs", AUTH, {"owner": "alice", "kind": "k", "id": "parity-1"}),
                (f"{job}/progress", AUTH, {"progress": 40, "stage": "s", "message": "m"}),
                (f"{job}/progress", AUTH, {"progress": 30}),
                (f"{job}/progress", AUTH, {"progress": 101}),
                (f"{job}/progress", AUTH, {"progress": "50"}),
                (f"{job}/progress", AUTH, {"progress": 50.0}),
                (f"{job}/progress", AUTH, {"progress": 50, "extra": 1}),
                (f"{job}/progress", user, {"progress": 50}),
                (f"{job}/progress", {}, {"progress": 50}),
                ("/api/jobs/unknown-job/progress", AUTH, {"progress": 5}),
                (f"{job}/complete", AUTH, {"result": {"ok": True}}),
                (f"{job}/fail", AUTH, {"error": "too late"}),
                (f"{job}/progress", AUTH, {"progress": 99}),
            ],
            True,
        ),
        (
            "job failure",
            [
                ("/api/jobs", AUTH, {"owner": "alice", "kind": "k", "id": "parity-2"}),
                ("/api/jobs/parity-2/fail", AUTH, {"error": {"code": "x", "message": "m"}}),
                ("/api/jobs/parity-3/fail", AUTH, {"error": {"code": ""}}),
                ("/api/jobs/parity-3/fail", AUTH, {}),
            ],
            True,
        ),
    ]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[TandemApp, TandemApp]]:
    async with AsyncExitStack() as stack:
        apps = []
        for name in ("express", "fastapi"):
            url = f"sqlite+aiosqlite:///{tmp_path / name}.db"
            await asyncio.to_thread(upgrade, url)
            settings = Settings(database_url=url, jwt_secret=TEST_SECRET, api_keys=[API_KEY])
            app = create_app(settings)
            await stack.enter_async_context(app.runtime.running())
            apps.append(app)
        yield apps[0], apps[1]


def settle(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<per node>" if k in PER_NODE else settle(v) for k, v in value.items()}
    if isinstance(value, list):
        return [settle(v) for v in value]
    return value


async def answer(client: httpx.AsyncClient, case: Case, exact: bool) -> tuple[Any, ...]:
    path, headers, body = case
    if isinstance(body, bytes):
        response = await client.post(
            path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
    else:
        response = await client.post(path, json=body, headers=headers)
    content = response.json()
    if not exact and "error" in content:
        content["error"]["message"] = "<not compared>"
    return response.status_code, settle(content), response.headers.get("retry-after")


@pytest.mark.parametrize(("name", "requests", "exact"), cases(), ids=[c[0] for c in cases()])
async def test_express_answers_as_fastapi_does(
    nodes: tuple[TandemApp, TandemApp], name: str, requests: list[Case], exact: bool
) -> None:
    express, fastapi = nodes
    got = []
    for app in (express, fastapi.api):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            got.append([await answer(client, case, exact) for case in requests])
    assert got[0] == got[1]


async def test_unrelated_requests_pass_through(nodes: tuple[TandemApp, TandemApp]) -> None:
    express, _ = nodes
    transport = httpx.ASGITransport(app=express)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as http:
        assert (await http.get("/api/publish")).status_code == 405
        assert (await http.post("/api/jobs//progress", json={"progress": 1})).status_code == 404
        assert (await http.post("/api/jobs/a/b/progress", json={"progress": 1})).status_code == 404
        created = await http.post("/api/jobs", json={"owner": "o", "kind": "k", "id": "j"})
        assert created.status_code == 201
        assert (await http.post("/api/jobs/j/cancel")).status_code == 200
