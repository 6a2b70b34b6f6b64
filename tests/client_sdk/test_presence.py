"""Presence through the SDK: members, join/leave events, and re-entering after a reconnect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client_sdk import BadRequest, Message, PermissionDenied
from tests.client_sdk.helpers import eventually, fast_client, take
from tests.support.live import LiveServer, live_server
from tests.support.proxy import TcpProxy

# Short, so that watching past it for a leave that must not come stays quick.
GRACE_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"TANDEM_PRESENCE_GRACE_S": str(GRACE_S)}
    with live_server(tmp_path_factory.mktemp("presence"), env) as node:
        yield node


async def test_members_and_events(server: LiveServer) -> None:
    room = "room:sdk-presence"
    watcher_token = server.token("bob", channels=["room:*"])
    alice_token = server.token("alice", name="Alice", channels=["room:*"])
    async with (
        fast_client(server.url, watcher_token) as bob,
        bob.subscribe(room) as watch,
        fast_client(server.url, alice_token) as tab1,
        fast_client(server.url, alice_token) as tab2,
    ):
        async with tab1.subscribe(room, presence=True), tab2.subscribe(room, presence=True):
            (joined,) = await take(watch, 1)
            assert isinstance(joined, Message) and joined.type == "presence.join"
            assert joined.data["user"] == "alice" and joined.data["name"] == "Alice"
            presence = await bob.presence(room)
            assert presence.total == 1
            (member,) = presence.members
            assert (member.user, member.name, member.connections) == ("alice", "Alice", 2)
        (left,) = await take(watch, 1)
        assert isinstance(left, Message) and left.type == "presence.leave"
        assert (await bob.presence(room)).total == 0
        try:
            await bob.presence("job:1")
        except BadRequest:
            pass
        else:
            raise AssertionError("job channels keep no presence")
    async with fast_client(server.url, server.token("mallory")) as mallory:
        try:
            await mallory.presence(room)
        except PermissionDenied:
            pass
        else:
            raise AssertionError("presence is only for those who may subscribe")


async def test_a_member_is_back_after_a_reconnect(server: LiveServer) -> None:
    room = "room:sdk-presence-reconnect"
    token = server.token("carol", channels=["room:*"])
    async with (
        fast_client(server.url, server.token("dave", channels=["room:*"])) as dave,
        dave.subscribe(room) as watch,
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, token) as carol,
        carol.subscribe(room, presence=True),
    ):
        (joined,) = await take(watch, 1)
        assert isinstance(joined, Message) and joined.type == "presence.join"
        await proxy.cut()
        # The SDK reconnects and enters again within the server's grace period: the others
        # see no leave and no join, also after the grace has run out (had the SDK not entered
        # again, the leave would come then).
        await eventually(lambda: carol.connected and proxy.accepted == 2)
        # Erin joins and closes after the cut: her leave comes when her grace period runs
        # out, after that of carol's old connection, so a leave or join of carol's would come
        # before it.
        erin = fast_client(server.url, server.token("erin", channels=["room:*"]))
        await erin.connect()
        await erin.subscribe(room, presence=True).__aenter__()
        await erin.close()  # a closed connection, not an unsubscribe: the grace period
        for event in ("presence.join", "presence.leave"):
            (item,) = await take(watch, 1, within=GRACE_S + 5)
            assert isinstance(item, Message) and (item.type, item.data["user"]) == (
                event,
                "erin",
            ), item
        assert [m.user for m in (await dave.presence(room)).members] == ["carol"]
