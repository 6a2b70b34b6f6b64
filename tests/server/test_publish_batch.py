"""POST /api/publish/batch against real nodes: order, limits, validation, retries, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.broker import BrokerUnavailable, PublishResult
from server.app import TandemApp, create_app
from server.config import Settings
from storage.migrate import upgrade
from tests.support.live import API_KEY, TEST_SECRET, LiveServer, live_server
from tests.support.services import PrivateRedis, private_redis
from tests.support.sio import connected, sentinel

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BATCH = "/api/publish/batch"


def item(channel: str, data: Any, id: str | None = None, event: str = "chat.message") -> dict:
    body = {"channel": channel, "event": event, "data": data}
    return body if id is None else {**body, "id": id}


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def history(http: httpx.Client, channel: str) -> list[dict]:
    response = http.get(f"/api/channels/{channel}/history", headers=AUTH)
    assert response.status_code == 200, response.text
    publications: list[dict] = response.json()["publications"]
    return publications


async def test_each_channel_is_published_and_delivered_in_request_order(
    server: LiveServer,
) -> None:
    channels = ["room:ba", "room:bb", "room:bc"]
    # Interleaved: 99 items over three channels, 33 each.
    items = [item(channels[i % 3], {"i": i}) for i in range(99)]
    async with connected(server.url, server.token("ops", scope="admin")) as reader:
        for channel in channels:
            assert (await reader.call("subscribe", {"channel": channel}))["ok"]
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as http:
            response = await http.post(BATCH, json={"publications": items})
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            events = await reader.take(99, timeout=10)
            # Then a sentinel on each channel: nothing (no duplicate) may come before them.
            sentinels = [item(channel, None, event="test.sentinel") for channel in channels]
            assert (await http.post(BATCH, json={"publications": sentinels})).status_code == 200
        for _ in channels:
            await reader.quiet_until(sentinel("test.sentinel"))
    assert len(results) == 99
    for c, channel in enumerate(channels):
        mine = results[c::3]
        assert [r["offset"] for r in mine] == list(range(1, 34)), channel
        assert len({r["epoch"] for r in mine}) == 1
        assert not any(r["duplicate"] for r in mine)
        seen = [env for event, env in events if env["channel"] == channel]
        assert [env["data"]["i"] for env in seen] == list(range(c, 99, 3))
        assert [env["offset"] for env in seen] == list(range(1, 34))
        assert all(event == "chat.message" for event, env in events)


def test_at_most_100_publications(http: httpx.Client) -> None:
    too_many = http.post(
        BATCH, json={"publications": [item("room:cap", i) for i in range(101)]}, headers=AUTH
    )
    assert too_many.status_code == 422
    error = too_many.json()["error"]
    assert error["code"] == "invalid_payload" and "100" in error["message"]
    empty = http.post(BATCH, json={"publications": []}, headers=AUTH)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_payload"
    assert history(http, "room:cap") == []
    full = http.post(
        BATCH, json={"publications": [item("room:cap", i) for i in range(100)]}, headers=AUTH
    )
    assert full.status_code == 200, full.text
    assert [r["offset"] for r in full.json()["results"]] == list(range(1, 101))
    assert [p["data"] for p in history(http, "room:cap")] == list(range(100))


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [
        ({"channel": "room:inv", "event": "no spaces"}, 422, "invalid_payload"),
        ({"channel": "room:inv", "event": "a.b", "extra": 1}, 422, "invalid_payload"),
        ({"event": "a.b"}, 422, "invalid_payload"),
        ({"channel": "room:inv", "event": "a.b", "id": ""}, 422, "invalid_payload"),
        ({"channel": "nope:x", "event": "a.b"}, 422, "unknown_channel"),
        ({"channel": "room:a b", "event": "a.b"}, 422, "invalid_payload"),
        ({"channel": "room:inv", "event": "server.notice"}, 403, "permission_denied"),
        ({"channel": "room:inv", "event": "a.b", "data": "x" * 70_000}, 413, "payload_too_large"),
        # The same id twice on one channel in one batch.
        ({"channel": "room:inv", "event": "a.b", "id": "dup"}, 422, "invalid_payload"),
    ],
)
def test_an_invalid_item_refuses_the_batch_naming_it(
    http: httpx.Client, bad: dict, status: int, code: str
) -> None:
    items = [item("room:inv", 0, id="dup"), item("room:inv2", 1), item("room:inv", 2), bad]
    items += [item("room:inv", i) for i in range(4, 10)]
    response = http.post(BATCH, json={"publications": items}, headers=AUTH)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert "publications.3" in error["message"] or "publications[3]" in error["message"], error
    assert history(http, "room:inv") == [] and history(http, "room:inv2") == []


def test_retrying_with_ids_returns_duplicates(http: httpx.Client) -> None:
    items = [item("room:re1" if i % 2 else "room:re2", i, id=f"w1-{i}") for i in range(10)]
    first = http.post(BATCH, json={"publications": items}, headers=AUTH)
    again = http.post(BATCH, json={"publications": items}, headers=AUTH)
    assert first.status_code == again.status_code == 200
    assert not any(r["duplicate"] for r in first.json()["results"])
    assert again.json()["results"] == [{**r, "duplicate": True} for r in first.json()["results"]]
    assert len(history(http, "room:re1")) == len(history(http, "room:re2")) == 5
    # The batch's items dedupe against single publishes with the same id, and vice versa.
    single = http.post("/api/publish", json=items[3], headers=AUTH).json()
    assert single == {**first.json()["results"][3], "duplicate": True}
    # Without ids, an Idempotency-Key header keys item i as "<key>:<i>".
    plain = [item("room:re3", i) for i in range(3)]
    keyed = {**AUTH, "Idempotency-Key": "batch-7"}
    one = http.post(BATCH, json={"publications": plain}, headers=keyed).json()["results"]
    two = http.post(BATCH, json={"publications": plain}, headers=keyed).json()["results"]
    assert two == [{**r, "duplicate": True} for r in one]
    assert [p["data"] for p in history(http, "room:re3")] == [0, 1, 2]
    by_header = http.post(
        "/api/publish", json=item("room:re3", 1), headers={**AUTH, "Idempotency-Key": "batch-7:1"}
    ).json()
    assert by_header == {**one[1], "duplicate": True}


def test_needs_an_api_key(http: httpx.Client, server: LiveServer) -> None:
    body = {"publications": [item("room:key", 1)]}
    assert http.post(BATCH, json=body).status_code == 401
    wrong = http.post(BATCH, json=body, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    user = {"Authorization": f"Bearer {server.token('alice', scope='admin')}"}
    denied = http.post(BATCH, json=body, headers=user)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert history(http, "room:key") == []


async def test_durable_batch_is_queued_then_delivered_in_order(server: LiveServer) -> None:
    items = [item("room:dur", i, id=f"d-{i}" if i % 2 else None) for i in range(6)]
    async with connected(server.url, server.token("ops", scope="admin")) as reader:
        assert (await reader.call("subscribe", {"channel": "room:dur"}))["ok"]
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as http:
            response = await http.post(BATCH, json={"publications": items, "durable": True})
        assert response.status_code == 202, response.text
        assert response.json() == {"queued": True, "ids": [None, "d-1", None, "d-3", None, "d-5"]}
        events = await reader.take(6, timeout=10)
    assert [env["data"] for _, env in events] == list(range(6))


def test_broker_down_is_503_with_retry_after_and_a_retry_publishes_once(
    tmp_path: Path,
) -> None:
    with (
        private_redis(tmp_path) as redis,
        live_server(tmp_path / "node", {"TANDEM_BROKER_URL": redis.url}) as node,
        httpx.Client(base_url=node.url, headers=AUTH, timeout=15) as http,
    ):
        items = [item(f"room:out{i % 2}", i, id=f"o-{i}") for i in range(6)]
        ok = http.post(BATCH, json={"publications": items[:2]})
        assert ok.status_code == 200, ok.text
        redis.shutdown_nosave()
        down = http.post(BATCH, json={"publications": items})
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"]
        body = down.json()
        assert body["error"]["code"] == "broker_unavailable" and body["error"]["retryable"]
        assert body["results"] == [None] * 6
        # Back (empty: it saved nothing): the same batch is published, each item once.
        restarted = PrivateRedis(redis.workdir, port=redis.port)
        restarted.start()
        try:
            for _ in range(50):
                retry = http.post(BATCH, json={"publications": items})
                if retry.status_code == 200:
                    break
                assert retry.status_code == 503, retry.text
                time.sleep(0.2)
            assert retry.status_code == 200, retry.text
            assert not any(r["duplicate"] for r in retry.json()["results"])
            for c in range(2):
                got = http.get(f"/api/channels/room:out{c}/history").json()["publications"]
                assert [p["data"] for p in got] == [c, c + 2, c + 4]
        finally:
            restarted.stop()


# -- partial failure, in process: a broker that fails one channel part-way ---------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[TandemApp]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tandem.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, jwt_secret=TEST_SECRET, api_keys=[API_KEY])
    tandem = create_app(settings)
    async with tandem.runtime.running():
        yield tandem


async def test_partial_failure_reports_what_was_published_and_a_retry_completes(
    app: TandemApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = app.runtime.broker
    publish = broker.publish
    outage = {"on": True}
    attempts: list[tuple[str, Any]] = []

    async def flaky(channel: str, event: str, data: Any, **kwargs: Any) -> PublishResult:
        attempts.append((channel, data))
        if outage["on"] and channel == "room:pf-b" and data >= 3:
            raise BrokerUnavailable("simulated outage")
        return await publish(channel, event, data, **kwargs)

    monkeypatch.setattr(broker, "publish", flaky)
    items = [item("room:pf-a" if i % 2 == 0 else "room:pf-b", i, id=f"pf-{i}") for i in range(8)]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as http:
        failed = await http.post(BATCH, json={"publications": items})
        assert failed.status_code == 503 and failed.headers["retry-after"]
        body = failed.json()
        assert body["error"]["code"] == "broker_unavailable" and body["error"]["retryable"]
        assert "5 of 8" in body["error"]["message"]
        results = body["results"]
        # room:pf-a all published; room:pf-b stopped at item 3 and never tried item 5 or 7.
        assert [r is not None for r in results] == [True, True, True, False] + [True, False] * 2
        assert ("room:pf-b", 5) not in attempts and ("room:pf-b", 7) not in attempts
        outage["on"] = False
        retry = await http.post(BATCH, json={"publications": items})
        assert retry.status_code == 200, retry.text
        again = retry.json()["results"]
    for i, result in enumerate(results):
        if result is not None:
            assert again[i] == {**result, "duplicate": True}
        else:
            assert again[i]["duplicate"] is False
    assert [r["offset"] for r in again[1::2]] == [1, 2, 3, 4]
    assert [r["offset"] for r in again[0::2]] == [1, 2, 3, 4]
    stored = await broker.history("room:pf-b")
    assert [p.data for p in stored.publications] == [1, 3, 5, 7]
