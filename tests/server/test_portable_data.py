"""Data every broker and client can carry, refused at the door otherwise (issue 16: NaN and
Infinity were delivered as null; an integer over 64 bits was answered 500 "retryable" when
published directly, and 202 when durable, then blocked its channel's outbox for good)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.live import API_KEY, LiveServer
from tests.support.sio import connected

AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
# As raw JSON text: NaN and Infinity are what JavaScript's JSON.stringify never writes, but
# Python's json.dumps does.
BAD = {
    "NaN": '{"x": NaN}',
    "Infinity": "[1, -Infinity]",
    "huge exponent": '{"x": 1e999}',
    "integer over 64 bits": '{"n": 1267650600228229401496703205376}',
}


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client:
        yield client


@pytest.mark.parametrize("durable", ["false", "true"])
@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_http_publish_refuses_data_it_cannot_carry(
    http: httpx.Client, data: str, durable: str
) -> None:
    body = (
        f'{{"channel": "room:nan", "event": "chat.message", "data": {data}, "durable": {durable}}}'
    )
    response = http.post("/api/publish", content=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_payload" and error["retryable"] is False
    assert "data" in error["message"]
    batch = '{"publications": [{"channel": "room:nan", "event": "chat.message", "data": %s}]}'
    assert http.post("/api/publish/batch", content=batch % data).status_code == 422
    assert http.get("/api/channels/room:nan/history").json()["publications"] == []


def test_other_data_that_becomes_publications_is_checked_too(http: httpx.Client) -> None:
    job = http.post("/api/jobs", json={"owner": "ann", "kind": "k"}).json()["job"]
    done = http.post(f"/api/jobs/{job['id']}/complete", content='{"result": {"x": NaN}}')
    assert done.status_code == 422, done.text
    note = '{"user": "ann", "type": "info", "title": "t", "body": "b", "data": [Infinity]}'
    assert http.post("/api/notifications", content=note).status_code == 422
    # What can be carried still is: large but 64-bit integers, floats, deep-enough nesting.
    fine = {"n": 2**63 - 1, "m": -(2**63), "u": 2**64 - 1, "f": 1.5e300, "deep": [[[1]]]}
    ok = http.post("/api/publish", json={"channel": "room:ok", "event": "x.y", "data": fine})
    assert ok.status_code == 200, ok.text


async def test_socket_publish_refuses_nan(server: LiveServer) -> None:
    token = server.token("ann", channels=["room:nan"])
    async with connected(server.url, token) as client:
        data = {"channel": "room:nan", "event": "chat.message", "data": float("nan")}
        ack = await client.call("publish", data)
        assert ack["error"]["code"] == "invalid_payload", ack
        ack = await client.call("publish", {**data, "data": 2**70})
        assert ack["error"]["code"] == "invalid_payload", ack
