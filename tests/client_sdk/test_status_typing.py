"""Status and typing through the SDK: set_status, typing, keep_typing, and reconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from client_sdk import BadRequest, Message, RateLimited, Resync, Subscription
from tests.client_sdk.helpers import eventually, fast_client, take
from tests.support.live import LiveServer, live_server
from tests.support.proxy import TcpProxy

GRANT = ["room:*"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"TANDEM_PRESENCE_GRACE_S": "2", "TANDEM_TYPING_TIMEOUT_S": "1"}
    with live_server(tmp_path_factory.mktemp("node"), env) as node:
        yield node


async def next_of(sub: Subscription, event: str) -> Message:
    """The next message of type ``event``, skipping others."""
    while True:
        (item,) = await take(sub, 1)
        if isinstance(item, Message) and item.type == event:
            return item
        assert not isinstance(item, Resync), item


async def test_status_is_seen_by_others_and_kept_across_a_reconnect(server: LiveServer) -> None:
    room = "room:sdk-status"
    async with (
        fast_client(server.url, server.token("bob", channels=GRANT)) as bob,
        bob.subscribe(room) as watch,
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, server.token("alice", name="Alice", channels=GRANT)) as alice,
        alice.subscribe(room, presence=True),
    ):
        joined = await next_of(watch, "presence.join")
        assert joined.data["status"] == "online"
        assert await alice.set_status("away") == "away"
        update = await next_of(watch, "presence.update")
        assert update.data == {"user": "alice", "name": "Alice", "status": "away"}
        (member,) = (await bob.presence(room)).members
        assert (member.user, member.status) == ("alice", "away")

        await proxy.cut()  # the SDK reconnects as "away": nobody sees a change
        await eventually(lambda: alice.connected and proxy.accepted == 2)
        # Carol joins and closes after the cut: her leave comes when her grace period runs
        # out, after the old connection's, so anything about alice would come before it.
        carol = fast_client(server.url, server.token("carol", channels=GRANT))
        await carol.connect()
        await carol.subscribe(room, presence=True).__aenter__()
        await carol.close()  # a closed connection, not an unsubscribe: the grace period
        for event in ("presence.join", "presence.leave"):
            (item,) = await take(watch, 1)
            assert isinstance(item, Message) and (item.type, item.data["user"]) == (
                event,
                "carol",
            ), item
        (member,) = (await bob.presence(room)).members
        assert (member.status, member.connections) == ("away", 1)
        with pytest.raises(ValueError, match="online, away, busy"):
            await alice.set_status("offline")  # type: ignore[arg-type]


async def test_typing_and_keep_typing(server: LiveServer) -> None:
    room = "room:sdk-typing"
    async with (
        fast_client(server.url, server.token("bob", channels=GRANT)) as bob,
        bob.subscribe(room) as watch,
        fast_client(server.url, server.token("alice", name="Alice", channels=GRANT)) as alice,
        alice.subscribe(room),
    ):
        await alice.typing(room)
        started = await next_of(watch, "presence.typing")
        assert started.data == {
            "user": "alice",
            "name": "Alice",
            "typing": True,
            "timeout_ms": 1000,
        }
        await alice.typing(room, False)
        assert (await next_of(watch, "presence.typing")).data["typing"] is False

        # Renewed past the server's 1 s timeout without a stop in between.
        async with alice.keep_typing(room, every=0.3):
            assert (await next_of(watch, "presence.typing")).data["typing"] is True
            first = time.monotonic()
            # Renewed every 0.3 s, announced again only once half the timeout has passed.
            (renewed,) = await take(watch, 1)
            assert isinstance(renewed, Message) and renewed.type == "presence.typing", renewed
            assert renewed.data["typing"] is True and time.monotonic() - first >= 0.4
        assert (await next_of(watch, "presence.typing")).data["typing"] is False
        # And nothing more of alice's: carol starts typing after her and never stops, so her
        # expiry comes from the same sweep, later; a renewal or expiry of alice's would come
        # first.
        async with (
            fast_client(server.url, server.token("carol", channels=GRANT)) as carol,
            carol.subscribe(room),
        ):
            await carol.typing(room)
            for typing in (True, False):
                (item,) = await take(watch, 1)
                assert isinstance(item, Message) and item.type == "presence.typing", item
                assert (item.data["user"], item.data["typing"]) == ("carol", typing), item

        with pytest.raises(BadRequest, match="subscribe to room:other"):
            await alice.typing("room:other")


async def test_too_many_typing_requests_are_rate_limited(server: LiveServer) -> None:
    room = "room:sdk-limit"
    async with (
        fast_client(server.url, server.token("carol", channels=GRANT)) as carol,
        carol.subscribe(room),
    ):
        with pytest.raises(RateLimited):
            for _ in range(30):
                await carol.typing(room, False)
