"""Named, scoped API keys against real nodes: scopes, rotation, revocation, rate, idempotency."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server

WITHIN = 10.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("keys")) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_key(node: LiveServer, name: str, scopes: list[str], **extra: Any) -> str:
    made = httpx.post(
        f"{node.url}/api/admin/keys",
        json={"name": name, "scopes": scopes, **extra},
        headers=bearer(API_KEY),
        timeout=WITHIN,
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    assert key.startswith("tdm_") and made.json()["scopes"] == scopes
    return key


def publish(node: LiveServer, key: str, channel: str, **extra: Any) -> httpx.Response:
    body = {"channel": channel, "event": "test.ping", "data": {"n": 1}}
    return httpx.post(
        f"{node.url}/api/publish",
        json=body,
        headers={**bearer(key), **extra.pop("headers", {})},
        timeout=WITHIN,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_key_does_what_its_scopes_allow_and_names_what_it_lacks(node: LiveServer) -> None:
    key = create_key(node, "checkout-worker", ["jobs", "publish:job:*"])
    assert publish(node, key, "job:42").status_code == 200
    refused = publish(node, key, "room:lobby")
    assert refused.status_code == 403
    assert error_of(refused) == {
        "code": "permission_denied",
        "message": "this API key lacks the scope 'publish:room:lobby'",
        "retryable": False,
    }
    with httpx.Client(base_url=node.url, headers=bearer(key), timeout=WITHIN) as api:
        job = api.post("/api/jobs", json={"owner": "alice", "kind": "checkout"})
        assert job.status_code == 201, job.text
        job_id = job.json()["job"]["id"]
        progress = api.post(f"/api/jobs/{job_id}/progress", json={"progress": 10})
        assert progress.status_code == 200, progress.text
        cases = {
            "history:read": api.get("/api/channels/job:42/history"),
            "presence:read": api.get("/api/channels/room:lobby/presence"),
            "notifications": api.post(
                "/api/notifications", json={"user": "alice", "type": "info", "title": "hi"}
            ),
            "tokens": api.post("/api/tokens", json={"sub": "alice"}),
            "docs": api.post("/api/docs", json={"id": "d1"}),
            "webhooks": api.get("/api/webhooks"),
            "admin": api.get("/api/admin/keys"),
        }
        batch = api.post(
            "/api/publish/batch",
            json={
                "publications": [
                    {"channel": "job:1", "event": "test.ping", "data": None},
                    {"channel": "user:bob", "event": "test.ping", "data": None},
                ]
            },
        )
    for scope, response in cases.items():
        assert response.status_code == 403, (scope, response.text)
        assert error_of(response)["message"] == f"this API key lacks the scope {scope!r}"
    assert batch.status_code == 403
    assert "publications[1]" in error_of(batch)["message"], batch.text
    assert "publish:user:bob" in error_of(batch)["message"], batch.text


def test_a_wrong_key_is_an_invalid_api_key_not_a_token_error(node: LiveServer) -> None:
    key = create_key(node, "wrong-secret", ["admin"])
    key_id = key.split("_")[1]
    forged = f"tdm_{key_id}_{'A' * 43}"
    for credential in ("not-a-key", forged, f"tdm_{'0' * 16}_{'A' * 43}", key[:-1]):
        refused = publish(node, credential, "job:1")
        assert refused.status_code == 401, (credential, refused.text)
        assert error_of(refused)["message"] == "invalid API key", credential
    # Something shaped like a JWT still gets the token's own explanation.
    token_like = publish(node, "a.b.c", "job:1")
    assert token_like.status_code == 401
    assert "token" in error_of(token_like)["message"]


def test_rotation_keeps_the_old_secret_for_its_grace_and_revocation_is_at_once(
    node: LiveServer,
) -> None:
    old = create_key(node, "rotating", ["publish:room:*"])
    with httpx.Client(base_url=node.url, headers=bearer(API_KEY), timeout=WITHIN) as admin:
        rotated = admin.post("/api/admin/keys/rotating/rotate", json={"grace_s": 60})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["key"]
        assert new != old and rotated.json()["rotated_at"]
        assert publish(node, old, "room:a").status_code == 200
        assert publish(node, new, "room:a").status_code == 200
        # Without grace the old secret stops at once.
        newer = admin.post("/api/admin/keys/rotating/rotate", json={"grace_s": 0}).json()["key"]
        assert publish(node, new, "room:a").status_code == 401
        assert publish(node, newer, "room:a").status_code == 200

        revoked = admin.delete("/api/admin/keys/rotating")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
        refused = publish(node, newer, "room:a")
        assert refused.status_code == 401
        assert error_of(refused)["message"] == "invalid API key: the key 'rotating' was revoked"
        again = admin.delete("/api/admin/keys/rotating")
        assert again.status_code == 409, again.text
        missing = admin.post("/api/admin/keys/nobody/rotate", json={})
        assert missing.status_code == 404, missing.text
        listed = {k["name"]: k for k in admin.get("/api/admin/keys").json()["keys"]}
    assert listed["rotating"]["revoked_at"] and "key" not in listed["rotating"]


def test_bad_key_definitions_are_refused(node: LiveServer) -> None:
    with httpx.Client(base_url=node.url, headers=bearer(API_KEY), timeout=WITHIN) as admin:
        for body, words in [
            ({"name": "x", "scopes": ["publish"]}, "unknown scope 'publish'"),
            ({"name": "x", "scopes": ["everything"]}, "known scopes: admin"),
            ({"name": "x", "scopes": []}, "at least one scope"),
            ({"name": "x", "scopes": ["publish:"]}, "invalid scope"),
            ({"name": "-x", "scopes": ["jobs"]}, "invalid key name"),
            ({"name": "x", "scopes": ["jobs"], "rate_per_s": 0}, "rate_per_s"),
            ({"name": "x", "scopes": ["jobs"], "owner": "me"}, "owner"),
        ]:
            refused = admin.post("/api/admin/keys", json=body)
            assert refused.status_code in (400, 422), (body, refused.text)
            assert error_of(refused)["code"] == "invalid_payload", body
            assert words in error_of(refused)["message"], (body, refused.text)
        create_key(node, "twice", ["jobs"])
        duplicate = admin.post("/api/admin/keys", json={"name": "twice", "scopes": ["jobs"]})
    assert duplicate.status_code == 409, duplicate.text
    assert "exists" in error_of(duplicate)["message"]


def test_a_key_over_its_rate_gets_429_with_retry_after(node: LiveServer) -> None:
    key = create_key(node, "slow-lane", ["publish:*", "history:read"], rate_per_s=2)
    other = create_key(node, "fast-lane", ["publish:*"])
    answers = [publish(node, key, "room:rate").status_code for _ in range(4)]
    assert answers[:2] == [200, 200] and answers[-1] == 429, answers
    limited = httpx.get(
        f"{node.url}/api/channels/room:rate/history", headers=bearer(key), timeout=WITHIN
    )
    assert limited.status_code == 429, limited.text
    assert limited.headers["Retry-After"] == "1"
    assert error_of(limited) == {
        "code": "rate_limited",
        "message": "the API key 'slow-lane' is over its 2 requests per second",
        "retryable": True,
    }
    # Another key is not held back by it.
    assert publish(node, other, "room:rate").status_code == 200


def test_idempotency_keys_belong_to_the_api_key(node: LiveServer) -> None:
    first = create_key(node, "tenant-a", ["publish:*"])
    second = create_key(node, "tenant-b", ["publish:*"])
    headers = {"Idempotency-Key": "order-7"}
    a = publish(node, first, "room:orders", headers=headers).json()
    a_again = publish(node, first, "room:orders", headers=headers).json()
    b = publish(node, second, "room:orders", headers=headers).json()
    assert a_again["duplicate"] is True and a_again["offset"] == a["offset"]
    assert b["duplicate"] is False and b["offset"] == a["offset"] + 1


def test_the_cli_manages_keys_a_running_cluster_honours(tmp_path: Path) -> None:
    with shared_stores(tmp_path) as stores:
        env = {**stores, "TANDEM_API_KEY_CACHE_S": "0.5"}
        with live_server(tmp_path / "a", env) as a, live_server(tmp_path / "b", env) as b:

            def tandem(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "server", "keys", *args],
                    env=a.env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )

            made = tandem("create", "deploy-bot", "--scope", "publish:room:*", "--rate", "50")
            assert made.returncode == 0, made.stderr
            summary, key = made.stdout.splitlines()
            assert summary == "deploy-bot  active  50/s  scopes: publish:room:*"
            assert publish(a, key, "room:x").status_code == 200
            assert publish(b, key, "room:x").status_code == 200

            listed = tandem("list", "--json")
            assert '"name": "deploy-bot"' in listed.stdout and key not in listed.stdout

            bad = tandem("create", "other", "--scope", "root")
            assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
            assert bad.stderr.startswith("invalid_payload: unknown scope 'root'")

            # Revoked through one node (here: the CLI), refused by every node once its short
            # cache of the key runs out.
            assert tandem("revoke", "deploy-bot").returncode == 0
            deadline = time.monotonic() + WITHIN
            statuses: list[int] = []
            while time.monotonic() < deadline:
                statuses = [publish(n, key, "room:x").status_code for n in (a, b)]
                if statuses == [401, 401]:
                    break
                time.sleep(0.1)
            assert statuses == [401, 401]


def test_a_tokens_key_cannot_mint_an_admin_token(node: LiveServer) -> None:
    key = create_key(node, "token-minter", ["tokens"])
    with httpx.Client(base_url=node.url, headers=bearer(key), timeout=WITHIN) as api:
        user = api.post("/api/tokens", json={"sub": "alice", "channels": ["room:*"]})
        admin = api.post("/api/tokens", json={"sub": "alice", "scope": "profile admin"})
    assert user.status_code == 200, user.text
    assert admin.status_code == 403, admin.text
    assert error_of(admin)["message"] == "this API key lacks the scope 'admin'"
