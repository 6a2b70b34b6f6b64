"""The `tandem` commands a newcomer runs: migrate, serve, token, publish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt

from tests.support.databases import postgres_database
from tests.support.live import API_KEY, TEST_SECRET, LiveServer, live_server, server_env
from tests.support.sio import connected


def tandem(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_command_prints_a_usable_token(tmp_path: Path) -> None:
    result = tandem(
        "token",
        "--sub",
        "alice",
        "--channel",
        "job:42",
        "--ttl",
        "60",
        env=server_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["job:42"]
    assert claims["exp"] - claims["iat"] == 60


async def test_publish_command_reaches_a_subscriber(server: LiveServer, tmp_path: Path) -> None:
    async with connected(server.url, server.token("alice", channels=["room:cli"])) as client:
        await client.call("subscribe", {"channel": "room:cli"})
        result = tandem(
            "publish",
            "room:cli",
            "chat.message",
            '{"text": "hi"}',
            "--url",
            server.url,
            "--api-key",
            API_KEY,
            env=server_env(tmp_path),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        event, envelope = await client.next()
    assert event == "chat.message" and envelope["data"] == {"text": "hi"}


def test_publish_command_rejects_bad_json(tmp_path: Path) -> None:
    result = tandem("publish", "room:a", "a.b", "{nope", env=server_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "JSON" in result.stderr


def test_production_refuses_default_secrets(tmp_path: Path) -> None:
    env = server_env(tmp_path, {"TANDEM_ENV": "production"})
    env.pop("TANDEM_JWT_SECRET")
    result = tandem("serve", "--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "TANDEM_JWT_SECRET" in result.stderr


async def test_server_runs_on_postgresql(tmp_path: Path) -> None:
    with postgres_database() as url:
        env = server_env(tmp_path, {"TANDEM_DATABASE_URL": url})
        migrated = tandem("migrate", env=env, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        with live_server(tmp_path, {"TANDEM_DATABASE_URL": url}) as server:
            async with connected(server.url, server.token("alice")) as client:
                assert (await client.call("subscribe", {"channel": "user:alice"}))["ok"]


def test_the_first_hour_mistakes_get_one_clear_line(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    refused = tandem("token", "--sub", "ann", "--ttl", "-5", env=env, cwd=tmp_path)
    assert refused.returncode != 0 and "--ttl" in refused.stderr
    unreachable = tandem(
        "publish",
        "room:x",
        "chat.message",
        "{}",
        "--url",
        "http://127.0.0.1:9",
        env=env,
        cwd=tmp_path,
    )
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert unreachable.stderr.startswith("cannot reach Tandem at http://127.0.0.1:9")
    assert "Traceback" not in unreachable.stderr


def test_a_port_in_use_is_one_line_and_a_failure(server: LiveServer, tmp_path: Path) -> None:
    result = tandem("serve", "--port", str(server.port), env=server_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"tandem could not listen on 127.0.0.1:{server.port}" in result.stderr
    assert "address already in use" in result.stderr and "Traceback" not in result.stderr
    assert "listening" not in result.stderr
