"""Default deny on every subscribe and publish, and canaries published where a client was refused
that must never reach it."""

from __future__ import annotations

import pytest

from tests.support.live import LiveServer
from tests.support.sio import connected


def publish(server: LiveServer, channel: str, event: str, data: object) -> dict:
    with server.api() as api:
        response = api.post("/api/publish", json={"channel": channel, "event": event, "data": data})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("claims", "channel", "code"),
    [
        ({}, "user:bob", "permission_denied"),
        ({}, "job:42", "permission_denied"),
        ({"channels": ["job:41"]}, "job:42", "permission_denied"),
        ({}, "doc:1", "permission_denied"),
        ({}, "room:lobby", "permission_denied"),
        ({"channels": ["room:team-*"]}, "room:other", "permission_denied"),
        ({}, "chat:1", "unknown_channel"),
        ({}, "job:../etc", "invalid_payload"),
        ({}, "job:" + "x" * 10_000, "invalid_payload"),
    ],
)
async def test_subscribe_denied(server: LiveServer, claims: dict, channel: str, code: str) -> None:
    async with connected(server.url, server.token("alice", **claims)) as client:
        ack = await client.call("subscribe", {"channel": channel})
    assert ack["ok"] is False and ack["error"]["code"] == code


@pytest.mark.parametrize(
    ("claims", "channel"),
    [
        ({}, "user:alice"),
        ({}, "flight:LH123"),
        ({"channels": ["job:42"]}, "job:42"),
        ({"channels": ["job:*"]}, "job:7"),
        ({"channels": ["room:team-*"]}, "room:team-a"),
        ({"scope": "admin"}, "user:bob"),
    ],
)
async def test_subscribe_allowed(server: LiveServer, claims: dict, channel: str) -> None:
    async with connected(server.url, server.token("alice", **claims)) as client:
        ack = await client.call("subscribe", {"channel": channel})
    assert ack["ok"] is True and ack["channel"] == channel


async def test_canary_never_reaches_an_intruder_even_after_reconnect(server: LiveServer) -> None:
    token = server.token("mallory", channels=["room:public"])
    for _ in range(2):  # a fresh connection is authorized afresh
        async with (
            connected(server.url, server.token("victim")) as victim,
            connected(server.url, token) as intruder,
        ):
            assert (await victim.call("subscribe", {"channel": "user:victim"}))["ok"] is True
            assert (await intruder.call("subscribe", {"channel": "user:victim"}))["ok"] is False
            assert (await intruder.call("subscribe", {"channel": "room:public"}))["ok"] is True
            publish(server, "user:victim", "notification.created", {"secret": "canary"})
            publish(server, "room:public", "chat.message", {"text": "hello"})
            event, envelope = await intruder.next()
            assert envelope["channel"] == "room:public"
            # The victim has the canary, so this node has fanned it out; what it had queued
            # for the intruder then arrives before the answer to a later request.
            assert (await victim.next())[1]["data"] == {"secret": "canary"}
            await intruder.quiet_until(intruder.round_trip())


async def test_client_publish_rules(server: LiveServer) -> None:
    token = server.token("alice", channels=["room:a", "job:9"])
    async with connected(server.url, token) as client:
        ok = await client.call(
            "publish", {"channel": "room:a", "event": "chat.message", "data": {"t": 1}}
        )
        assert ok["ok"] is True and ok["offset"] >= 1
        server_only = await client.call("publish", {"channel": "job:9", "event": "x.y", "data": 1})
        assert server_only["error"]["code"] == "permission_denied"
        not_member = await client.call("publish", {"channel": "room:b", "event": "x.y", "data": 1})
        assert not_member["error"]["code"] == "permission_denied"
        reserved = await client.call(
            "publish", {"channel": "room:a", "event": "server.notice", "data": 1}
        )
        assert reserved["error"]["code"] == "permission_denied"
        bad_name = await client.call(
            "publish", {"channel": "room:a", "event": "connect", "data": 1}
        )
        assert bad_name["error"]["code"] == "invalid_payload"


async def test_client_publish_is_idempotent_per_user(server: LiveServer) -> None:
    async with connected(server.url, server.token("alice", channels=["room:idem"])) as alice:
        request = {"channel": "room:idem", "event": "chat.message", "data": 1, "id": "m-1"}
        first = await alice.call("publish", request)
        again = await alice.call("publish", request)
    assert again["offset"] == first["offset"] and again["duplicate"] is True
    async with connected(server.url, server.token("bob", channels=["room:idem"])) as bob:
        other = await bob.call("publish", request)
    assert other["duplicate"] is False and other["offset"] == first["offset"] + 1
