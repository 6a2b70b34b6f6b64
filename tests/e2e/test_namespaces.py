"""Channel namespaces declared in a TANDEM_CHANNELS_FILE, on real nodes (memory and Redis)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import API_KEY, LiveServer, live_server, server_env
from tests.support.redis import broker_url, delete_prefix, unique_prefix
from tests.support.sio import Recorder, connected

CHANNELS = """\
# Anyone may chat; cursors are latest-value; small messages, a short history.
[namespaces.chat]
subscribe = "any"
client_publish = true
presence = true
history_size = 3
history_ttl_s = 3600
recovery = true
latest_value = ["cursor.moved"]
max_payload_bytes = 256

[namespaces.vault]
subscribe = "grant"
client_publish = true

[namespaces.brief]
subscribe = "any"
history_ttl_s = 1

[namespaces.live]
subscribe = "any"
recovery = false

# A built-in's numbers: a shorter history and larger messages than the default.
[namespaces.room]
history_size = 2
max_payload_bytes = 100000
"""
KNOWN = "job, user, flight, airport, doc, room, admin, chat, vault, brief, live"


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp(f"namespaces-{request.param}")
    channels = tmp / "channels.toml"
    channels.write_text(CHANNELS)
    env = {"TANDEM_CHANNELS_FILE": str(channels), "TANDEM_PRESENCE_GRACE_S": "0"}
    prefix = unique_prefix()
    if request.param == "redis":
        env["TANDEM_BROKER_URL"] = broker_url(prefix)
    try:
        with live_server(tmp, env) as node:
            yield node
    finally:
        if request.param == "redis":
            asyncio.run(delete_prefix(prefix))


def api(server: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"})


async def publish(server: LiveServer, channel: str, count: int, event: str = "x.y") -> list[int]:
    async with api(server) as http:
        offsets = []
        for i in range(count):
            body = {"channel": channel, "event": event, "data": {"i": i}}
            response = await http.post("/api/publish", json=body)
            assert response.status_code == 200, response.text
            offsets.append(response.json()["offset"])
        return offsets


async def next_event(client: Recorder, name: str) -> Any:
    """The next ``name`` event, skipping others (presence) that come first."""
    async with asyncio.timeout(5):
        while True:
            event, envelope = await client.events.get()
            if event == name:
                return envelope


async def test_a_declared_namespace_lets_clients_publish_and_be_present(
    server: LiveServer,
) -> None:
    async with (
        connected(server.url, server.token("ann", name="Ann")) as ann,
        connected(server.url, server.token("bob", name="Bob")) as bob,
    ):
        for client in (ann, bob):
            ack = await client.call("subscribe", {"channel": "chat:lobby", "presence": True})
            assert ack["ok"] is True and ack["state"] is None, ack
        joined = await next_event(ann, "presence.join")
        while joined["data"]["user"] != "bob":
            joined = await next_event(ann, "presence.join")
        sent = await ann.call(
            "publish", {"channel": "chat:lobby", "event": "chat.message", "data": {"t": "hi"}}
        )
        assert sent["ok"] is True, sent
        message = await next_event(bob, "chat.message")
        assert message["data"] == {"t": "hi"} and "latest" not in message
        await ann.call(
            "publish", {"channel": "chat:lobby", "event": "cursor.moved", "data": {"x": 1}}
        )
        assert (await next_event(bob, "cursor.moved"))["latest"] is True
        view = await bob.call("presence", {"channel": "chat:lobby"})
        assert sorted(m["user"] for m in view["members"]) == ["ann", "bob"]
        typing = await ann.call("typing", {"channel": "chat:lobby", "typing": True})
        assert typing == {"ok": True}
        assert (await next_event(bob, "presence.typing"))["data"]["user"] == "ann"
        # Not a latest-value type here, though it is the default's (TANDEM_LATEST_VALUE_EVENTS).
        await publish(server, "chat:lobby", 1, event="flight.position")
        assert "latest" not in await next_event(bob, "flight.position")
    async with api(server) as http:
        response = await http.get("/api/channels/chat:lobby/presence")
    assert response.status_code == 200


async def test_a_grant_namespace_refuses_whoever_has_no_grant(server: LiveServer) -> None:
    async with connected(server.url, server.token("eve")) as eve:
        refused = await eve.call("subscribe", {"channel": "vault:x"})
        assert refused["error"]["code"] == "permission_denied"
        refused = await eve.call("publish", {"channel": "vault:x", "event": "a.b", "data": 1})
        assert refused["error"]["code"] == "permission_denied"
        nothing = await eve.call("subscribe", {"channel": "vault:x", "presence": True})
        assert nothing["error"]["code"] == "permission_denied"
    async with connected(server.url, server.token("kim", channels=["vault:x"])) as kim:
        assert (await kim.call("subscribe", {"channel": "vault:x"}))["ok"] is True
        sent = await kim.call("publish", {"channel": "vault:x", "event": "a.b", "data": 1})
        assert sent["ok"] is True
        no_presence = await kim.call("subscribe", {"channel": "vault:x", "presence": True})
        assert no_presence["error"]["code"] == "bad_request"
        assert no_presence["error"]["message"] == (
            "vault:x has no presence; presence is kept on user:, doc:, room:, chat: channels"
        )


async def test_an_unknown_namespace_is_refused_with_the_configured_ones(
    server: LiveServer,
) -> None:
    message = f"unknown channel kind 'forum'; known kinds: {KNOWN}"
    async with connected(server.url, server.token("ann")) as client:
        ack = await client.call("subscribe", {"channel": "forum:1"})
    assert ack["error"] == {"code": "unknown_channel", "message": message, "retryable": False}
    async with api(server) as http:
        response = await http.post(
            "/api/publish", json={"channel": "forum:1", "event": "a.b", "data": 1}
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_channel"
    assert response.json()["error"]["message"] == message


async def test_history_size_is_the_namespaces_own(server: LiveServer) -> None:
    chat = await publish(server, "chat:size", 5)
    room = await publish(server, "room:size", 5)
    default = await publish(server, "flight:size", 5)
    async with api(server) as http:
        kept = {
            channel: [
                p["offset"]
                for p in (await http.get(f"/api/channels/{channel}/history")).json()["publications"]
            ]
            for channel in ("chat:size", "room:size", "flight:size")
        }
    assert kept == {"chat:size": chat[2:], "room:size": room[3:], "flight:size": default}
    token = server.token("ann")
    async with connected(server.url, token) as client:
        top = await client.call("subscribe", {"channel": "chat:size"})
        since = {"epoch": top["epoch"], "offset": 2}
        back = await client.call("subscribe", {"channel": "chat:size", "since": since})
        assert back["recovered"] is True
        assert [p["offset"] for p in back["publications"]] == [3, 4, 5]
        await client.call("unsubscribe", {"channel": "chat:size"})
        since = {"epoch": top["epoch"], "offset": 1}
        lost = await client.call("subscribe", {"channel": "chat:size", "since": since})
        assert lost["recovered"] is False and lost["publications"] == []


async def test_history_ttl_is_the_namespaces_own(server: LiveServer) -> None:
    first = await publish(server, "brief:t", 1)
    await publish(server, "chat:t", 1)
    await asyncio.sleep(1.3)
    second = await publish(server, "brief:t", 1)
    async with api(server) as http:
        brief = (await http.get("/api/channels/brief:t/history")).json()
        chat = (await http.get("/api/channels/chat:t/history")).json()
        since = {"since_epoch": brief["epoch"], "since_offset": first[0] - 1}
        gone = await http.get("/api/channels/brief:t/history", params=since)
    assert [p["offset"] for p in brief["publications"]] == second
    assert len(chat["publications"]) == 1
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "unrecoverable_position"


async def test_recovery_off_answers_with_state_instead(server: LiveServer) -> None:
    async with connected(server.url, server.token("ann")) as client:
        top = await client.call("subscribe", {"channel": "live:r"})
        await publish(server, "live:r", 2)
        await client.take(2)
        await client.call("unsubscribe", {"channel": "live:r"})
        since = {"epoch": top["epoch"], "offset": top["offset"]}
        again = await client.call("subscribe", {"channel": "live:r", "since": since})
    assert again["ok"] is True and again["recovered"] is False
    assert again["publications"] == [] and again["offset"] == top["offset"] + 2
    async with api(server) as http:
        kept = await http.get("/api/channels/live:r/history")
        since = {"since_epoch": top["epoch"], "since_offset": top["offset"]}
        refused = await http.get("/api/channels/live:r/history", params=since)
    assert len(kept.json()["publications"]) == 2
    assert refused.status_code == 410
    assert refused.json()["error"]["code"] == "unrecoverable_position"


async def test_the_payload_limit_is_the_namespaces_own(server: LiveServer) -> None:
    big = {"text": "x" * 300}  # over chat's 256 bytes
    large = {"text": "y" * 80_000}  # over the default 65536, within room's 100000
    message = "data is over the 256-byte limit of chat: channels"
    async with connected(server.url, server.token("ann", channels=["room:big"])) as client:
        ack = await client.call("publish", {"channel": "chat:p", "event": "a.b", "data": big})
        assert ack["error"]["code"] == "payload_too_large" and ack["error"]["message"] == message
        ok = await client.call("publish", {"channel": "chat:p", "event": "a.b", "data": {}})
        assert ok["ok"] is True
        ok = await client.call("publish", {"channel": "room:big", "event": "a.b", "data": large})
        assert ok["ok"] is True, ok
        over = await client.call(
            "publish", {"channel": "room:big", "event": "a.b", "data": {"t": "z" * 100_001}}
        )
        assert over["error"]["code"] == "payload_too_large"
    async with api(server) as http:
        one = await http.post(
            "/api/publish", json={"channel": "chat:p", "event": "a.b", "data": big}
        )
        batch = await http.post(
            "/api/publish/batch",
            json={"publications": [{"channel": "chat:p", "event": "a.b", "data": big}]},
        )
        fine = await http.post(
            "/api/publish", json={"channel": "room:big", "event": "a.b", "data": large}
        )
    assert one.status_code == 413 and one.json()["error"]["code"] == "payload_too_large"
    assert one.json()["error"]["message"] == message
    assert batch.status_code == 413
    assert batch.json()["error"]["message"] == f"publications[0]: {message}"
    assert fine.status_code == 200


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[namespaces.chat]\nsubscribe = "any"\nhistory_size 100\n',
            ", line 3: invalid TOML: Expected '=' after a key in a key/value pair (column 14)",
        ),
        (
            '[namespaces.job]\nsubscribe = "any"\n',
            ": namespace 'job', key 'subscribe': the built-in job namespace's subscribers are "
            "the job's owner (and its watch token's grant) ('owner'); that is part of what it "
            "is and cannot be 'any'",
        ),
    ],
)
def test_a_bad_file_stops_serve_with_one_line(tmp_path: Path, text: str, line: str) -> None:
    channels = tmp_path / "channels.toml"
    channels.write_text(text)
    env = server_env(tmp_path, {"TANDEM_CHANNELS_FILE": str(channels)})
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"TANDEM_CHANNELS_FILE {channels}{line}\n"
    assert not (tmp_path / "tandem.db").exists()  # stopped before migrating
