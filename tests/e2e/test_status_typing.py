"""User status, the presence grace period and typing indicators on real nodes.

Each test runs on one node (memory broker) and on two nodes sharing Redis, where the users sit
on different nodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.support.live import LiveServer, live_server
from tests.support.proxy import TcpProxy
from tests.support.redis import broker_url, delete_prefix, unique_prefix
from tests.support.sio import Recorder, connected, sentinel

GRACE_S = 1.0
TYPING_S = 1.0
ENV = {"TANDEM_PRESENCE_GRACE_S": str(GRACE_S), "TANDEM_TYPING_TIMEOUT_S": str(TYPING_S)}
GRANT = ["room:*"]

Nodes = tuple[LiveServer, LiveServer]


@pytest.fixture(scope="module", params=["memory", "redis"])
def nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nodes]:
    """(A, B): the same node twice (memory), or two nodes sharing Redis."""
    if request.param == "memory":
        with live_server(tmp_path_factory.mktemp("node"), ENV) as node:
            yield node, node
        return
    prefix = unique_prefix()
    env = {**ENV, "TANDEM_BROKER_URL": broker_url(prefix)}
    with ExitStack() as stack:
        a, b = (stack.enter_context(live_server(tmp_path_factory.mktemp(n), env)) for n in "ab")
        yield a, b
    asyncio.run(delete_prefix(prefix))


@pytest.fixture
def node(nodes: Nodes) -> LiveServer:
    return nodes[0]


async def wait_for(client: Recorder, event: str, user: str, timeout: float = 3.0) -> Any:
    """The next ``event`` about ``user``, skipping anything else that arrives first."""
    async with asyncio.timeout(timeout):
        while True:
            name, envelope = await client.events.get()
            if name == event and envelope["data"]["user"] == user:
                return envelope


async def subscribe(client: Recorder, channel: str, *, presence: bool = True) -> None:
    ack = await client.call("subscribe", {"channel": channel, "presence": presence})
    assert ack["ok"], ack


async def ok(client: Recorder, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    ack: dict[str, Any] = await client.call(event, payload)
    assert ack["ok"], ack
    return ack


async def chat_sentinel(client: Recorder, room: str) -> None:
    """Publish a sentinel on ``room``: it is published after anything ``client``'s earlier
    requests published there, so it arrives after it too (see ``Recorder.quiet_until``)."""
    await ok(client, "publish", {"channel": room, "event": "chat.sentinel", "data": None})


def members(ack: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(m["user"], m["status"], m["connections"]) for m in ack["members"]]


# -- status -------------------------------------------------------------------------------------


async def test_status_changes_reach_other_members_and_the_users_own_channel(nodes: Nodes) -> None:
    a, b = nodes
    room = "room:status"
    alice = a.token("alice", name="Alice", channels=GRANT)
    async with (
        connected(b.url, b.token("bob", name="Bob", channels=GRANT)) as bob,
        connected(a.url, alice) as tab1,
        connected(b.url, alice) as tab2,  # a second tab, on the other node, in no room
    ):
        await subscribe(bob, room)
        await subscribe(tab1, room)
        await subscribe(tab1, "user:alice", presence=False)
        joined = await wait_for(bob, "presence.join", "alice")
        assert joined["data"]["status"] == "online"

        # One idle tab of two: alice is still online, and nobody hears about it.
        assert (await ok(tab1, "status", {"status": "away"}))["status"] == "online"
        await chat_sentinel(tab1, room)
        await bob.quiet_until(sentinel("chat.sentinel"))
        # Both idle: away, on the room (where tab1 is) and on alice's own channel.
        assert (await ok(tab2, "status", {"status": "away"}))["status"] == "away"
        update = await wait_for(bob, "presence.update", "alice")
        assert update["data"] == {"user": "alice", "name": "Alice", "status": "away"}
        assert update["channel"] == room
        heard = [await wait_for(tab1, "presence.update", "alice") for _ in range(2)]
        assert sorted(e["channel"] for e in heard) == [room, "user:alice"]
        assert {e["data"]["status"] for e in heard} == {"away"}
        for node in (a, b):
            view = await ok(bob, "presence", {"channel": room})
            assert members(view) == [("alice", "away", 1), ("bob", "online", 1)], node.url
            with node.api() as http:
                listed = http.get(f"/api/channels/{room}/presence").json()
            assert listed["members"][0]["status"] == "away"

        # Busy beats everything; a tab that goes takes its status along after the grace period.
        await ok(tab2, "status", {"status": "busy"})
        assert (await wait_for(bob, "presence.update", "alice"))["data"]["status"] == "busy"
        await tab2.client.disconnect()
        gone = time.monotonic()
        assert (await wait_for(bob, "presence.update", "alice"))["data"]["status"] == "away"
        assert time.monotonic() - gone >= GRACE_S - 0.1
        await ok(tab1, "status", {"status": "online"})
        assert (await wait_for(bob, "presence.update", "alice"))["data"]["status"] == "online"
        await chat_sentinel(tab1, room)
        await bob.quiet_until(sentinel("chat.sentinel"))


# -- the grace period ---------------------------------------------------------------------------


async def test_a_killed_transport_leaves_only_after_the_grace_period(nodes: Nodes) -> None:
    a, b = nodes
    room = "room:killed"
    async with (
        connected(b.url, b.token("bob", channels=GRANT)) as bob,
        TcpProxy(a.port) as proxy,
        connected(proxy.url, a.token("alice", channels=GRANT)) as alice,
    ):
        await subscribe(bob, room)
        await subscribe(alice, room)
        await wait_for(bob, "presence.join", "alice")
        await proxy.cut()
        cut = time.monotonic()
        assert members(await ok(bob, "presence", {"channel": room}))[0][0] == "alice"
        # Nothing before the leave, and the leave only once the grace period is over.
        name, envelope = await bob.next(timeout=GRACE_S + 2)
        assert (name, envelope["data"]["user"]) == ("presence.leave", "alice"), envelope
        assert GRACE_S - 0.1 <= time.monotonic() - cut < GRACE_S + 2
        assert members(await ok(bob, "presence", {"channel": room})) == [("bob", "online", 1)]


async def test_a_reconnect_within_the_grace_period_shows_no_leave_or_join(nodes: Nodes) -> None:
    a, b = nodes
    room = "room:reload"
    token = a.token("alice", channels=GRANT)
    async with (
        connected(b.url, b.token("bob", channels=GRANT)) as bob,
        TcpProxy(a.port) as carols_proxy,
        connected(carols_proxy.url, a.token("carol", channels=GRANT)) as carol,
    ):
        await subscribe(bob, room)
        await subscribe(carol, room)
        await wait_for(bob, "presence.join", "carol")
        async with TcpProxy(a.port) as proxy, connected(proxy.url, token) as page:
            await subscribe(page, room)
            await wait_for(bob, "presence.join", "alice")
            await proxy.cut()  # the page reloads ...
        async with connected(b.url, token) as reloaded:  # ... and comes back, on node B
            await subscribe(reloaded, room)
            # Carol's connection, on the page's node, dies after the page's: her leave comes
            # from the same grace timer, later, so a leave or join of alice's would be first.
            await carols_proxy.cut()
            name, envelope = await bob.next(timeout=GRACE_S + 3)
            assert (name, envelope["data"]["user"]) == ("presence.leave", "carol"), envelope
            view = await ok(bob, "presence", {"channel": room})
            assert members(view) == [("alice", "online", 1), ("bob", "online", 1)]


# -- typing -------------------------------------------------------------------------------------


async def test_typing_is_relayed_and_expires_without_renewal(nodes: Nodes) -> None:
    a, b = nodes
    room = "room:typing"
    async with (
        connected(b.url, b.token("bob", channels=GRANT)) as bob,
        connected(a.url, a.token("alice", name="Alice", channels=GRANT)) as alice,
        connected(a.url, a.token("carol", channels=GRANT)) as carol,
    ):
        await subscribe(bob, room, presence=False)
        await subscribe(alice, room, presence=False)
        await subscribe(carol, room, presence=False)
        await ok(alice, "typing", {"channel": room, "typing": True})
        started = await wait_for(bob, "presence.typing", "alice")
        assert started["channel"] == room
        assert started["data"] == {
            "user": "alice",
            "name": "Alice",
            "typing": True,
            "timeout_ms": round(TYPING_S * 1000),
        }
        await ok(alice, "typing", {"channel": room, "typing": True})  # a renewal: no news
        renewed = time.monotonic()
        await chat_sentinel(alice, room)
        await bob.quiet_until(sentinel("chat.sentinel"))
        stopped = await wait_for(bob, "presence.typing", "alice", timeout=TYPING_S + 2)
        assert stopped["data"] == {"user": "alice", "name": "Alice", "typing": False}
        assert TYPING_S - 0.1 <= time.monotonic() - renewed < TYPING_S + 1

        await ok(alice, "typing", {"channel": room, "typing": True})
        assert (await wait_for(bob, "presence.typing", "alice"))["data"]["typing"] is True
        await ok(alice, "typing", {"channel": room, "typing": False})
        assert (await wait_for(bob, "presence.typing", "alice"))["data"]["typing"] is False
        await ok(alice, "typing", {"channel": room, "typing": False})  # not typing: no news
        await chat_sentinel(alice, room)
        await bob.quiet_until(sentinel("chat.sentinel"))
        # And nothing expires: carol, on alice's node, starts typing after her, so her expiry
        # comes from the same sweep, later; an expiry of alice's would come first.
        await ok(carol, "typing", {"channel": room, "typing": True})
        assert (await wait_for(bob, "presence.typing", "carol"))["data"]["typing"] is True
        name, envelope = await bob.next(timeout=TYPING_S + 2)
        assert (name, envelope["data"]) == (
            "presence.typing",
            {"user": "carol", "name": None, "typing": False},
        ), envelope


async def test_typing_stops_at_once_when_the_typing_connection_drops(nodes: Nodes) -> None:
    a, b = nodes
    room = "room:typing-drop"
    async with (
        connected(b.url, b.token("bob", channels=GRANT)) as bob,
        TcpProxy(a.port) as proxy,
        connected(proxy.url, a.token("alice", channels=GRANT)) as alice,
    ):
        await subscribe(bob, room)
        await subscribe(alice, room)
        await ok(alice, "typing", {"channel": room, "typing": True})
        await wait_for(bob, "presence.typing", "alice")
        await proxy.cut()
        cut = time.monotonic()
        stopped = await wait_for(bob, "presence.typing", "alice")
        assert stopped["data"]["typing"] is False and time.monotonic() - cut < 0.5
        # Presence itself waits for the grace period.
        await wait_for(bob, "presence.leave", "alice", timeout=GRACE_S + 2)


# -- limits and input ---------------------------------------------------------------------------


async def test_typing_and_status_are_rate_limited_per_connection(node: LiveServer) -> None:
    room = "room:limits"
    token = node.token("alice", channels=GRANT)
    async with connected(node.url, token) as eager, connected(node.url, token) as other:
        await subscribe(eager, room)
        await subscribe(other, room)
        requests = [
            eager.call("typing", {"channel": room, "typing": i % 2 == 0}) for i in range(15)
        ] + [eager.call("status", {"status": "away"}) for _ in range(5)]
        acks = await asyncio.gather(*requests)
        refused = [ack for ack in acks if not ack["ok"]]
        assert sum(ack["ok"] for ack in acks) <= 11  # a burst of 10, plus what refilled
        assert refused and all(ack["error"]["code"] == "rate_limited" for ack in refused)
        assert all(ack["error"]["retryable"] for ack in refused)
        # A separate bucket: other requests of that connection, and other connections, go on.
        await ok(eager, "presence", {"channel": room})
        await ok(other, "status", {"status": "busy"})
        await asyncio.sleep(0.6)  # 2 per second come back
        await ok(eager, "status", {"status": "online"})


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("status", {"status": "sleeping"}, "invalid_payload"),
        ("status", {"status": "offline"}, "invalid_payload"),
        ("status", {"status": "AWAY"}, "invalid_payload"),
        ("status", {}, "invalid_payload"),
        ("status", {"status": "away", "since": 1}, "invalid_payload"),
        ("typing", {"channel": "room:input", "typing": "yes"}, "invalid_payload"),
        ("typing", {"channel": "room:input", "typing": 1}, "invalid_payload"),
        ("typing", {"channel": "room:input"}, "invalid_payload"),
        ("typing", {"channel": "room:bad id", "typing": True}, "invalid_payload"),
        ("typing", {"channel": "nope:1", "typing": True}, "unknown_channel"),
        ("typing", {"channel": "room:elsewhere", "typing": True}, "bad_request"),
        ("typing", {"channel": "user:alice", "typing": True}, "bad_request"),
        ("typing", {"channel": "flight:LH1", "typing": True}, "bad_request"),
    ],
)
async def test_bad_status_and_typing_requests_are_refused(
    node: LiveServer, event: str, payload: dict[str, Any], code: str
) -> None:
    async with connected(node.url, node.token("alice", channels=GRANT)) as client:
        for channel in ("room:input", "user:alice", "flight:LH1"):
            await subscribe(client, channel, presence=False)
        ack = await client.call(event, payload)
        assert not ack["ok"] and ack["error"]["code"] == code, ack
        # Nothing changed and the connection lives on.
        await ok(client, "typing", {"channel": "room:input", "typing": False})
        view = await ok(client, "presence", {"channel": "user:alice"})
        assert view["members"] == []
