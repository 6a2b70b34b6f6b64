"""Channel presence on real nodes: one node (memory), and several sharing Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.redis import broker_url, delete_prefix, unique_prefix
from tests.support.sio import Recorder, connected, sentinel

TTL_S = 3
GRACE_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One node whose dropped connections stay present for a short grace period."""
    env = {"TANDEM_PRESENCE_GRACE_S": str(GRACE_S)}
    with live_server(tmp_path_factory.mktemp("node"), env) as node:
        yield node


async def wait_for(client: Recorder, event: str, user: str, timeout: float = 3.0) -> Any:
    """The next ``event`` about ``user``, skipping anything else that arrives first."""
    async with asyncio.timeout(timeout):
        while True:
            name, envelope = await client.events.get()
            if name == event and envelope["data"]["user"] == user:
                return envelope


async def subscribe(client: Recorder, channel: str, *, presence: bool = True) -> Any:
    ack = await client.call("subscribe", {"channel": channel, "presence": presence})
    assert ack["ok"], ack
    return ack


async def http_presence(node: LiveServer, channel: str, token: str = API_KEY) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        return await http.get(f"/api/channels/{channel}/presence")


async def chat_sentinel(client: Recorder, channel: str) -> None:
    """Publish a sentinel on ``channel``: it comes after anything published there before
    (see ``Recorder.quiet_until``)."""
    ack = await client.call("publish", {"channel": channel, "event": "chat.sentinel", "data": None})
    assert ack["ok"], ack


def users(view: dict[str, Any]) -> list[tuple[str, int]]:
    return [(m["user"], m["connections"]) for m in view["members"]]


# -- one node ---------------------------------------------------------------------------------


async def test_three_tabs_of_one_user_are_one_member(server: LiveServer) -> None:
    alice = server.token("alice", name="Alice", channels=["room:tabs"])
    bob = server.token("bob", name="Bob", channels=["room:tabs"])
    async with connected(server.url, bob) as watcher:
        await subscribe(watcher, "room:tabs")
        await wait_for(watcher, "presence.join", "bob")
        async with (
            connected(server.url, alice) as tab1,
            connected(server.url, alice) as tab2,
            connected(server.url, alice) as tab3,
        ):
            for tab in (tab1, tab2, tab3):
                await subscribe(tab, "room:tabs")
            joined = await wait_for(watcher, "presence.join", "alice")
            assert joined["data"] == {
                "user": "alice",
                "name": "Alice",
                "status": "online",
                "info": {},
            }
            assert isinstance(joined["offset"], int) and joined["channel"] == "room:tabs"
            # One join for three tabs (each subscribe publishes its join before answering).
            await chat_sentinel(tab3, "room:tabs")
            await watcher.quiet_until(sentinel("chat.sentinel"))

            ack = await watcher.call("presence", {"channel": "room:tabs"})
            assert ack["ok"] and ack["total"] == 2
            assert ack["members"] == [
                {
                    "user": "alice",
                    "name": "Alice",
                    "status": "online",
                    "info": {},
                    "connections": 3,
                },
                {"user": "bob", "name": "Bob", "status": "online", "info": {}, "connections": 1},
            ]
            by_key = await http_presence(server, "room:tabs")
            by_user = await http_presence(server, "room:tabs", alice)
            for response in (by_key, by_user):
                assert response.status_code == 200, response.text
                assert response.json() == {k: v for k, v in ack.items() if k != "ok"}

            await tab1.client.disconnect()
            assert (await tab2.call("unsubscribe", {"channel": "room:tabs"}))["ok"]
            # alice is still there in tab3 (an unsubscribe publishes any leave before it
            # answers).
            await chat_sentinel(tab3, "room:tabs")
            await watcher.quiet_until(sentinel("chat.sentinel"))
            ack = await watcher.call("presence", {"channel": "room:tabs"})
            # Unsubscribing leaves at once; a closed connection stays for the grace period.
            assert users(ack) == [("alice", 2), ("bob", 1)]
            # Once tab1's grace period is over (the count drops), still no leave.
            for _ in range(int((GRACE_S + 3) / 0.05)):
                ack = await watcher.call("presence", {"channel": "room:tabs"})
                if users(ack) == [("alice", 1), ("bob", 1)]:
                    break
                await asyncio.sleep(0.05)
            assert users(ack) == [("alice", 1), ("bob", 1)]
            await chat_sentinel(tab3, "room:tabs")
            await watcher.quiet_until(sentinel("chat.sentinel"))
        left = await wait_for(watcher, "presence.leave", "alice", timeout=GRACE_S + 3)
        assert left["data"] == {"user": "alice"} and left["offset"] > joined["offset"]
        ack = await watcher.call("presence", {"channel": "room:tabs"})
        assert users(ack) == [("bob", 1)] and ack["total"] == 1


async def test_watchers_without_presence_are_invisible_but_see_events(server: LiveServer) -> None:
    grant = ["room:watch"]
    async with (
        connected(server.url, server.token("eve", channels=grant)) as watcher,
        connected(server.url, server.token("frank", channels=grant)) as member,
    ):
        await subscribe(watcher, "room:watch", presence=False)
        await subscribe(member, "room:watch")
        await wait_for(watcher, "presence.join", "frank")
        ack = await watcher.call("presence", {"channel": "room:watch"})
        assert users(ack) == [("frank", 1)]
        # Subscribing again without presence takes the member out.
        await subscribe(member, "room:watch", presence=False)
        await wait_for(watcher, "presence.leave", "frank")
        assert (await watcher.call("presence", {"channel": "room:watch"}))["total"] == 0
    admin = server.token("root", scope="admin")
    async with connected(server.url, admin) as client:
        refused = await client.call("subscribe", {"channel": "flight:X1", "presence": True})
        assert refused["error"]["code"] == "bad_request"
        assert "flight:X1 has no presence" in refused["error"]["message"]


async def test_user_channel_presence_shows_the_users_own_connections(server: LiveServer) -> None:
    token = server.token("dora")
    async with connected(server.url, token) as one, connected(server.url, token) as two:
        await subscribe(one, "user:dora")
        await subscribe(two, "user:dora")
        ack = await one.call("presence", {"channel": "user:dora"})
    assert ack["ok"] and users(ack) == [("dora", 2)]


async def test_presence_is_authorized_and_validated_like_subscribe(server: LiveServer) -> None:
    stranger = server.token("mallory")
    async with connected(server.url, stranger) as client:
        for payload, code in [
            ({"channel": "room:tabs"}, "permission_denied"),
            ({"channel": "user:alice"}, "permission_denied"),
            ({"channel": "doc:1"}, "permission_denied"),
            ({"channel": "job:1"}, "bad_request"),
            ({"channel": "flight:LH1"}, "bad_request"),
            ({"channel": "nope:1"}, "unknown_channel"),
            ({"channel": "room:bad id"}, "invalid_payload"),
            ({}, "invalid_payload"),
            ({"channel": "room:tabs", "extra": 1}, "invalid_payload"),
        ]:
            ack = await client.call("presence", payload)
            assert not ack["ok"] and ack["error"]["code"] == code, (payload, ack)
        flight = await client.call("presence", {"channel": "flight:LH1"})
        assert "room:" in flight["error"]["message"]
        own = await client.call("presence", {"channel": "user:mallory"})
        assert own["ok"] and own["members"] == [] and own["total"] == 0

    assert (await http_presence(server, "room:tabs", stranger)).status_code == 403
    assert (await http_presence(server, "room:tabs", "not-a-key")).status_code == 401
    job = await http_presence(server, "job:1")
    assert job.status_code == 400 and job.json()["error"]["code"] == "bad_request"
    assert (await http_presence(server, "nope:1")).status_code == 422


# -- several nodes sharing Redis ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], list]]:
    """Two long-lived nodes (B, C); tests add a node A of their own and kill it."""
    prefix = unique_prefix()
    env = {"TANDEM_BROKER_URL": broker_url(prefix), "TANDEM_PRESENCE_TTL_S": str(TTL_S)}
    with ExitStack() as stack:
        nodes = [stack.enter_context(live_server(tmp_path_factory.mktemp(n), env)) for n in "bc"]
        yield env, nodes
    asyncio.run(delete_prefix(prefix))


async def test_a_killed_nodes_members_vanish_within_the_ttl(
    cluster: tuple[dict[str, str], list[LiveServer]], tmp_path: Path
) -> None:
    env, (b, c) = cluster
    grant = ["room:kill"]
    with live_server(tmp_path, env) as a:
        async with (
            connected(b.url, b.token("bob", channels=grant)) as bob,
            connected(c.url, c.token("carol", channels=grant)) as carol,
            connected(a.url, a.token("alice", name="Alice", channels=grant)) as alice,
        ):
            await subscribe(bob, "room:kill")
            await subscribe(carol, "room:kill")
            await wait_for(bob, "presence.join", "carol")
            started = time.monotonic()
            await subscribe(alice, "room:kill")
            await wait_for(bob, "presence.join", "alice")
            assert bob.arrivals[-1] - started < 1.0
            for node in (a, b, c):
                view = (await http_presence(node, "room:kill")).json()
                assert users(view) == [("alice", 1), ("bob", 1), ("carol", 1)], node.url

            a.process.kill()
            killed = time.monotonic()
            for watcher in (bob, carol):
                await wait_for(watcher, "presence.leave", "alice", timeout=TTL_S + 3)
            assert time.monotonic() - killed < TTL_S + 2
            # B and C both sweep the channel: still exactly one leave each. A presence read
            # sweeps too, after any sweep under way on its node, so once both nodes answered
            # one, a second leave would have been published before this sentinel.
            for node in (b, c):
                assert (await http_presence(node, "room:kill")).status_code == 200
            await chat_sentinel(bob, "room:kill")
            for watcher in (bob, carol):
                await watcher.quiet_until(sentinel("chat.sentinel"))
            ack = await bob.call("presence", {"channel": "room:kill"})
            assert users(ack) == [("bob", 1), ("carol", 1)]


async def test_a_draining_node_takes_its_members_out_at_once(
    cluster: tuple[dict[str, str], list[LiveServer]], tmp_path: Path
) -> None:
    env, (b, _) = cluster
    slow_expiry = {**env, "TANDEM_PRESENCE_TTL_S": "60"}  # only the drain can be this quick
    grant = ["room:drain"]
    with live_server(tmp_path, slow_expiry) as a:
        async with (
            connected(b.url, b.token("bob", channels=grant)) as bob,
            connected(a.url, a.token("alice", channels=grant)) as alice,
        ):
            await subscribe(bob, "room:drain")
            await subscribe(alice, "room:drain")
            await wait_for(bob, "presence.join", "alice")
            a.process.send_signal(signal.SIGTERM)
            await wait_for(bob, "presence.leave", "alice", timeout=3)
            view = (await http_presence(b, "room:drain")).json()
            assert users(view) == [("bob", 1)]
