"""Reconnects: a dropped transport, an expired token, history overrun and slow readers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import Client, ClientClosed, Message, Notice, Resync, ServerAPI, TokenExpired
from tests.client_sdk.helpers import (
    SENTINEL,
    assert_contiguous,
    eventually,
    fast_client,
    messages,
    nothing_before,
    take,
    wait_disconnected,
)
from tests.support.live import API_KEY, LiveServer, live_server, stop
from tests.support.proxy import TcpProxy


@pytest.fixture(scope="module")
def short_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("short"), {"TANDEM_HISTORY_SIZE": "5"}) as node:
        yield node


def room_token(server: LiveServer, ttl: float = 3600) -> str:
    return server.token("alice", ttl=ttl, channels=["room:*"])


async def test_dropped_transport_recovers_every_publication_once(server: LiveServer) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(server.url, API_KEY) as api,
        fast_client(proxy.url, room_token(server)) as client,
        client.subscribe("room:drop") as sub,
    ):
        for i in range(5):
            await api.publish("room:drop", "chat.message", i)
        before = messages(await take(sub, 5))

        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        for i in range(5, 55):
            await api.publish("room:drop", "chat.message", i)
        await eventually(lambda: proxy.refused >= 2)  # a few refused reconnect attempts
        proxy.resume()

        after = await take(sub, 50)
        assert_contiguous([*before, *after])
        assert [m.data for m in messages(after)] == list(range(5, 55))
        assert sub.recovered is True
        assert client.connected
        assert proxy.accepted >= 2
        # Live delivery goes on after the replay.
        await api.publish("room:drop", "chat.message", 55)
        (last,) = messages(await take(sub, 1))
        assert last.data == 55 and last.offset == after[-1].offset + 1
        await nothing_before(sub, api.publish("room:drop", SENTINEL, None))


async def test_repeated_drops_while_publishing(server: LiveServer) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(server.url, API_KEY) as api,
        fast_client(proxy.url, room_token(server)) as client,
        client.subscribe("room:flaky") as a,
        client.subscribe("room:flaky2") as b,
    ):

        async def publish_all() -> None:
            for i in range(60):
                await api.publish("room:flaky", "chat.message", i)
                await api.publish("room:flaky2", "chat.message", i)
                await asyncio.sleep(0.005)

        publisher = asyncio.create_task(publish_all())
        for _ in range(3):
            await asyncio.sleep(0.15)
            await proxy.cut()
        await asyncio.wait_for(publisher, 20)
        for sub in (a, b):
            got = await take(sub, 60)
            assert_contiguous(got)
            assert [m.data for m in messages(got)] == list(range(60))
            await nothing_before(sub, api.publish(sub.channel, SENTINEL, None))


async def test_expired_token_is_refreshed_and_the_stream_continues(server: LiveServer) -> None:
    issued: list[float] = []

    async def provider() -> str:
        issued.append(asyncio.get_running_loop().time())
        # The first token lives just long enough to subscribe; later ones for an hour.
        return room_token(server, ttl=1.0 if len(issued) == 1 else 3600)

    notices: list[Notice] = []
    noticed = asyncio.Event()

    def on_notice(notice: Notice) -> None:
        notices.append(notice)
        noticed.set()

    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, provider) as client,
    ):
        client.on_notice(on_notice)
        async with client.subscribe("room:expiry") as sub:
            for i in range(5):
                await api.publish("room:expiry", "chat.message", i)
            first = await take(sub, 5)
            await asyncio.wait_for(noticed.wait(), 5)
            for i in range(5, 15):
                await api.publish("room:expiry", "chat.message", i)
            rest = await take(sub, 10)
            assert_contiguous([*first, *rest])
            assert [m.data for m in messages([*first, *rest])] == list(range(15))
            assert sub.recovered is True
            assert len(issued) == 2
            assert notices[0].code == "token_expired"
            assert notices[0].reconnect is True
            assert client.connected
            await nothing_before(sub, api.publish("room:expiry", SENTINEL, None))


async def test_expired_plain_token_stops_the_client(server: LiveServer) -> None:
    async with fast_client(server.url, room_token(server, ttl=1.5)) as client:
        async with client.subscribe("room:plain") as sub:
            with pytest.raises(TokenExpired):
                await asyncio.wait_for(anext(sub), 5)
        assert isinstance(client.error, TokenExpired)
        assert not client.connected
        with pytest.raises(TokenExpired):
            await client.publish("room:plain", "chat.message", 1)


async def test_beyond_history_yields_resync(short_history: LiveServer) -> None:
    server = short_history
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(server.url, API_KEY) as api,
        fast_client(proxy.url, room_token(server)) as client,
        client.subscribe("room:short") as sub,
    ):
        await api.publish("room:short", "chat.message", 0)
        await take(sub, 1)
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        results = [await api.publish("room:short", "chat.message", i) for i in range(1, 9)]
        proxy.resume()

        (resync,) = await take(sub, 1)
        assert isinstance(resync, Resync)
        assert resync.channel == "room:short"
        assert (resync.epoch, resync.offset) == (results[-1].epoch, results[-1].offset)
        assert resync.state is None  # rooms keep no state
        assert sub.recovered is False
        assert (sub.epoch, sub.offset) == (resync.epoch, resync.offset)

        await api.publish("room:short", "chat.message", 9)
        (msg,) = messages(await take(sub, 1))
        assert msg.data == 9 and msg.offset == resync.offset + 1
        await nothing_before(sub, api.publish("room:short", SENTINEL, None))


async def test_beyond_history_on_a_stateful_channel_carries_the_state(
    short_history: LiveServer,
) -> None:
    server = short_history
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(server.url, API_KEY) as api,
        fast_client(proxy.url, server.token("ops", scope="admin")) as client,
        client.subscribe("flight:LH1") as sub,
    ):
        await api.publish("flight:LH1", "flight.updated", {"progress": 0})
        await take(sub, 1)
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        for progress in range(10, 90, 10):
            last = await api.publish("flight:LH1", "flight.updated", {"progress": progress})
        proxy.resume()

        (resync,) = await take(sub, 1)
        assert isinstance(resync, Resync)
        assert sub.recovered is False
        assert resync.offset == last.offset
        latest = resync.state["latest"]
        assert latest["offset"] == last.offset
        assert latest["type"] == "flight.updated"
        assert latest["data"] == {"progress": 80}
        assert sub.state == resync.state


async def test_unrecoverable_saved_position_starts_with_resync(short_history: LiveServer) -> None:
    server = short_history
    async with ServerAPI(server.url, API_KEY) as api:
        first = await api.publish("room:old", "chat.message", 0)
        for i in range(1, 10):
            await api.publish("room:old", "chat.message", i)
        async with (
            Client(server.url, token=room_token(server)) as client,
            client.subscribe("room:old", since=(first.epoch, first.offset)) as sub,
        ):
            assert sub.recovered is False
            (resync,) = await take(sub, 1)
            assert isinstance(resync, Resync) and resync.offset == first.offset + 9


async def test_slow_reader_overflow_resyncs_instead_of_losing_silently(
    server: LiveServer,
) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, room_token(server), max_queue=5) as client,
        client.subscribe("room:slow") as sub,
    ):
        for i in range(30):
            last = await api.publish("room:slow", "chat.message", i)
        items: list[Message | Resync] = []
        async with asyncio.timeout(10):
            while not items or items[-1].offset != last.offset:
                items.append(await anext(sub))
        assert any(isinstance(item, Resync) for item in items)
        assert len(items) < 30
        assert_contiguous(items)
        assert sub.recovered is False
        await api.publish("room:slow", "chat.message", 30)
        (msg,) = messages(await take(sub, 1))
        assert msg.offset == last.offset + 1


async def test_live_gap_is_repaired_from_history(server: LiveServer) -> None:
    """Lose live messages on a healthy connection; the next one reveals the gap."""
    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, room_token(server)) as client,
        client.subscribe("room:gap") as sub,
    ):
        await api.publish("room:gap", "chat.message", 0)
        (first,) = messages(await take(sub, 1))
        # Stop live delivery behind the SDK's back (raw wire unsubscribe), so the next
        # publications exist on the server but never reach this client live.
        assert client._conn is not None
        assert (await client._conn.request("unsubscribe", {"channel": "room:gap"}))["ok"]
        for i in range(1, 4):
            await api.publish("room:gap", "chat.message", i)
        latest = (await api.history("room:gap", limit=1)).publications[-1]
        client._dispatch(latest.type, _envelope(latest))

        got = messages(await take(sub, 3))
        assert [m.data for m in got] == [1, 2, 3]
        assert_contiguous([first, *got])
        assert sub.recovered is True
        # The repair re-subscribed on the server: live delivery is back.
        await api.publish("room:gap", "chat.message", 4)
        (live,) = messages(await take(sub, 1))
        assert live.data == 4 and live.offset == got[-1].offset + 1
        await nothing_before(sub, api.publish("room:gap", SENTINEL, None))


async def test_gap_the_server_cannot_fill_ends_in_resync(server: LiveServer) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, room_token(server)) as client,
        client.subscribe("room:bogus") as sub,
    ):
        first = await api.publish("room:bogus", "chat.message", 0)
        await take(sub, 1)
        bogus = Message("room:bogus", "chat.message", first.offset + 5, first.epoch, 0.0, "x")
        client._dispatch(bogus.type, _envelope(bogus))
        (resync,) = await take(sub, 1)
        assert isinstance(resync, Resync)
        assert (resync.epoch, resync.offset) == (first.epoch, first.offset)
        await api.publish("room:bogus", "chat.message", 1)
        (msg,) = messages(await take(sub, 1))
        assert msg.data == 1 and msg.offset == first.offset + 1


def _envelope(msg: Message) -> dict[str, object]:
    return {
        "channel": msg.channel,
        "type": msg.type,
        "offset": msg.offset,
        "epoch": msg.epoch,
        "ts": msg.ts,
        "data": msg.data,
    }


async def test_shutdown_notice_moves_the_client_to_another_node(
    server: LiveServer, tmp_path: Path
) -> None:
    notices: list[Notice] = []
    with live_server(tmp_path / "leaving") as leaving:
        async with (
            TcpProxy(leaving.port) as proxy,
            ServerAPI(server.url, API_KEY) as api,
            fast_client(proxy.url, room_token(server)) as client,
            client.subscribe("room:move") as sub,
        ):
            client.on_notice(notices.append)
            async with ServerAPI(leaving.url, API_KEY) as old:
                await old.publish("room:move", "chat.message", "old node")
            await take(sub, 1)
            proxy.target_port = server.port  # the load balancer now points elsewhere
            await asyncio.to_thread(stop, leaving)  # SIGTERM: the node drains its clients

            # The other node has its own stream for the channel: continuity cannot be proven.
            (resync,) = await take(sub, 1)
            assert isinstance(resync, Resync)
            assert [n.code for n in notices] == ["shutdown"]
            assert notices[0].reconnect is True
            await api.publish("room:move", "chat.message", "new node")
            (msg,) = messages(await take(sub, 1))
            assert msg.data == "new node" and msg.offset == resync.offset + 1


async def test_requests_wait_for_the_reconnect(server: LiveServer) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, room_token(server)) as client,
        client.subscribe("room:wait") as sub,
    ):
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        publish = asyncio.create_task(client.publish("room:wait", "chat.message", "later"))
        # Two reconnect attempts refused after the publish was made: it waits for the next.
        refused = proxy.refused
        await eventually(lambda: proxy.refused >= refused + 2)
        assert not publish.done()
        proxy.resume()
        result = await asyncio.wait_for(publish, 5)
        (msg,) = messages(await take(sub, 1))
        assert msg.offset == result.offset


async def test_close_while_reconnecting(server: LiveServer) -> None:
    async with TcpProxy(server.port) as proxy:
        client = fast_client(proxy.url, room_token(server))
        await client.connect()
        sub = client.subscribe("room:closing")
        await sub.__aenter__()
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        await eventually(lambda: proxy.refused >= 1)  # in the middle of failing reconnects
        await asyncio.wait_for(client.close(), 5)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(sub), 1)
        await sub.__aexit__(None, None, None)
        with pytest.raises(ClientClosed):
            await client.publish("room:closing", "chat.message", 1)
