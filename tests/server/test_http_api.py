from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.live import API_KEY, TEST_SECRET, LiveServer, live_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def http(server: LiveServer):
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def test_publish_then_history(http: httpx.Client) -> None:
    first = http.post(
        "/api/publish",
        json={"channel": "room:h", "event": "chat.message", "data": {"n": 1}},
        headers=AUTH,
    )
    assert first.status_code == 200
    body = first.json()
    assert body["offset"] == 1 and body["duplicate"] is False
    http.post(
        "/api/publish", json={"channel": "room:h", "event": "chat.message", "data": 2}, headers=AUTH
    )
    history = http.get("/api/channels/room:h/history", headers=AUTH).json()
    assert [p["data"] for p in history["publications"]] == [{"n": 1}, 2]
    assert history["offset"] == 2 and history["epoch"] == body["epoch"]
    since = http.get(
        "/api/channels/room:h/history",
        params={"since_epoch": body["epoch"], "since_offset": 1},
        headers=AUTH,
    ).json()
    assert [p["offset"] for p in since["publications"]] == [2]
    gone = http.get(
        "/api/channels/room:h/history",
        params={"since_epoch": "old", "since_offset": 1},
        headers=AUTH,
    )
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "unrecoverable_position"


def test_idempotency_key_dedupes(http: httpx.Client) -> None:
    body = {"channel": "room:i", "event": "chat.message", "data": 1}
    headers = {**AUTH, "Idempotency-Key": "order-1"}
    first = http.post("/api/publish", json=body, headers=headers).json()
    again = http.post("/api/publish", json=body, headers=headers).json()
    assert again == {**first, "duplicate": True}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"Authorization": "Basic abc"}, 401, "unauthorized"),
    ],
)
def test_publish_needs_credentials(
    http: httpx.Client, headers: dict, status: int, code: str
) -> None:
    response = http.post(
        "/api/publish", json={"channel": "room:a", "event": "a.b", "data": 1}, headers=headers
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_user_tokens_publish_only_where_clients_may(http: httpx.Client, server: LiveServer) -> None:
    user = {"Authorization": f"Bearer {server.token('alice', channels=['room:a', 'job:1'])}"}
    ok = http.post(
        "/api/publish", json={"channel": "room:a", "event": "chat.message", "data": 1}, headers=user
    )
    assert ok.status_code == 200
    denied = http.post(
        "/api/publish", json={"channel": "job:1", "event": "job.progress", "data": 1}, headers=user
    )
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    expired = jwt.encode({"sub": "a", "exp": time.time() - 5}, TEST_SECRET, algorithm="HS256")
    late = http.post(
        "/api/publish",
        json={"channel": "room:a", "event": "a.b"},
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert late.status_code == 401 and late.json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"channel": "room:a"}, 422, "invalid_payload"),
        ({"channel": "room:a", "event": "no spaces"}, 422, "invalid_payload"),
        ({"channel": "room:a", "event": "a.b", "extra": 1}, 422, "invalid_payload"),
        ({"channel": "nope:a", "event": "a.b"}, 422, "unknown_channel"),
        ({"channel": "room:a b", "event": "a.b"}, 422, "invalid_payload"),
        ({"channel": "room:a", "event": "server.notice"}, 403, "permission_denied"),
        ({"channel": "room:a", "event": "a.b", "data": "x" * 70_000}, 413, "payload_too_large"),
    ],
)
def test_publish_validation(http: httpx.Client, body: dict, status: int, code: str) -> None:
    response = http.post("/api/publish", json=body, headers=AUTH)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize(("data", "status"), [("é" * 32_000, 200), ("é" * 33_000, 413)])
def test_the_payload_limit_counts_utf8_bytes(http: httpx.Client, data: str, status: int) -> None:
    # 64,002 bytes of compact JSON pass the 65,536-byte limit; 66,002 do not (with \u escapes
    # they would have been 192,002 characters).
    body = {"channel": "room:a", "event": "a.b", "data": data}
    assert http.post("/api/publish", json=body, headers=AUTH).status_code == status


def test_non_json_body_is_invalid_payload(http: httpx.Client) -> None:
    response = http.post(
        "/api/publish", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_payload"


def test_oversized_body_gets_413_before_it_is_read(http: httpx.Client) -> None:
    started = time.monotonic()
    response = http.post(
        "/api/publish",
        content=b"x" * 2_000_000,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert time.monotonic() - started < 1.0


def test_tokens_are_minted_with_grants(http: httpx.Client) -> None:
    response = http.post(
        "/api/tokens", json={"sub": "page-7", "channels": ["job:7"], "ttl": 600}, headers=AUTH
    )
    assert response.status_code == 200
    body = response.json()
    claims = jwt.decode(body["token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "page-7" and claims["channels"] == ["job:7"]
    assert claims["exp"] == body["expires_at"]


def test_tokens_need_an_api_key(http: httpx.Client, server: LiveServer) -> None:
    user = {"Authorization": f"Bearer {server.token('alice', scope='admin')}"}
    assert http.post("/api/tokens", json={"sub": "x"}, headers=user).status_code == 403
    too_long = http.post("/api/tokens", json={"sub": "x", "ttl": 10**9}, headers=AUTH)
    assert too_long.status_code == 422
    bad_grant = http.post("/api/tokens", json={"sub": "x", "channels": ["zzz:1"]}, headers=AUTH)
    assert bad_grant.status_code == 422


def test_history_is_authorized_for_users(http: httpx.Client, server: LiveServer) -> None:
    user = {"Authorization": f"Bearer {server.token('alice')}"}
    assert http.get("/api/channels/user:alice/history", headers=user).status_code == 200
    assert http.get("/api/channels/user:bob/history", headers=user).status_code == 403


def test_health_metrics_and_docs(http: httpx.Client) -> None:
    assert http.get("/health/live").json() == {"status": "ok"}
    ready = http.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["checks"] == {"broker": "ok", "database": "ok"}
    assert ready["outbox"]["status"] == "ok" and ready["outbox"]["dead_letters"] == 0
    metrics = http.get("/metrics").text
    assert "tandem_publications_total" in metrics and "tandem_connections" in metrics
    assert "tandem_outbox_dead_letters 0.0" in metrics and "tandem_outbox_pending" in metrics
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/api/publish", "/api/tokens", "/api/channels/{channel}/history"} <= set(paths)
    missing = http.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_durable_publish_is_queued_then_delivered(server: LiveServer) -> None:
    from tests.support.sio import connected

    async with connected(server.url, server.token("ops", scope="admin")) as client:
        await client.call("subscribe", {"channel": "job:durable"})
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as http:
            response = await http.post(
                "/api/publish",
                json={
                    "channel": "job:durable",
                    "event": "job.progress",
                    "data": 5,
                    "durable": True,
                },
            )
        assert response.status_code == 202 and response.json() == {"queued": True}
        event, envelope = await client.next()
    assert event == "job.progress" and envelope["data"] == 5


def test_cors_on_the_http_api_follows_the_setting(tmp_path: Path) -> None:
    env = {"TANDEM_CORS_ORIGINS": "https://app.example"}
    with live_server(tmp_path, env) as node, httpx.Client(base_url=node.url) as http:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        allowed = http.options(
            "/api/publish", headers={"Origin": "https://app.example", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = http.options(
            "/api/publish", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        response = http.get("/api/jobs/nope", headers={"Origin": "https://app.example", **AUTH})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        # Engine.IO answers /socket.io itself: one header, not two.
        poll = http.get(
            "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://app.example"}
        )
        assert poll.headers.get_list("access-control-allow-origin") == ["https://app.example"]
