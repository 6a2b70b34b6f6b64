"""The realtime client against a real node: subscribe, publish, typed errors."""

from __future__ import annotations

import asyncio

import pytest

from client_sdk import (
    Client,
    InvalidPayload,
    Message,
    PermissionDenied,
    PublishResult,
    ServerAPI,
    TandemError,
    TokenExpired,
    Unauthorized,
    UnknownChannel,
)
from tests.client_sdk.helpers import SENTINEL, fast_client, messages, nothing_before, take
from tests.support.live import API_KEY, LiveServer


def alice(server: LiveServer, ttl: float = 3600) -> str:
    return server.token("alice", ttl=ttl, channels=["room:*"])


async def test_subscribe_then_receive_publications_in_order(server: LiveServer) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, alice(server)) as client,
        client.subscribe("room:order") as sub,
    ):
        assert client.connected
        assert sub.recovered is True
        assert sub.state is None
        assert sub.epoch is not None
        start = sub.offset
        assert start is not None
        for i in range(20):
            await api.publish("room:order", "chat.message", {"n": i})
        got = messages(await take(sub, 20))
        assert [m.data for m in got] == [{"n": i} for i in range(20)]
        assert [m.offset for m in got] == list(range(start + 1, start + 21))
        assert {(m.channel, m.type, m.epoch) for m in got} == {
            ("room:order", "chat.message", sub.epoch)
        }
        assert sub.offset == start + 20
        await nothing_before(sub, api.publish("room:order", SENTINEL, None))


async def test_publish_from_the_sdk_reaches_subscribers(server: LiveServer) -> None:
    async with (
        Client(server.url, token=alice(server)) as reader,
        Client(server.url, token=server.token("bob", channels=["room:chat"])) as writer,
        reader.subscribe("room:chat") as sub,
    ):
        result = await writer.publish("room:chat", "chat.message", {"text": "hi"})
        assert isinstance(result, PublishResult)
        assert result.duplicate is False
        (item,) = messages(await take(sub, 1))
        assert (item.offset, item.epoch) == (result.offset, result.epoch)
        assert item.data == {"text": "hi"}
        assert item.type == "chat.message"


async def test_publish_with_id_is_idempotent(server: LiveServer) -> None:
    async with (
        Client(server.url, token=alice(server)) as client,
        client.subscribe("room:idem") as sub,
    ):
        first = await client.publish("room:idem", "chat.message", {"v": 1}, id="msg-1")
        again = await client.publish("room:idem", "chat.message", {"v": 1}, id="msg-1")
        assert not first.duplicate
        assert again.duplicate
        assert (again.offset, again.epoch) == (first.offset, first.epoch)
        assert len(await take(sub, 1)) == 1
        await nothing_before(sub, client.publish("room:idem", SENTINEL, None))


async def test_request_errors_are_typed(server: LiveServer) -> None:
    async with Client(server.url, token=alice(server)) as client:
        with pytest.raises(PermissionDenied) as denied:
            async with client.subscribe("user:bob"):
                pass
        assert denied.value.code == "permission_denied"
        assert denied.value.retryable is False
        with pytest.raises(UnknownChannel):
            async with client.subscribe("nope:1"):
                pass
        with pytest.raises(InvalidPayload):
            await client.publish("room:x", "not an event name", {})
        with pytest.raises(PermissionDenied):
            await client.publish("room:x", "job.progress", {})  # server-only event type
        with pytest.raises(PermissionDenied):
            await client.publish("flight:1", "chat.message", {})
        # The connection survives refused requests.
        async with client.subscribe("user:alice") as own:
            assert own.channel == "user:alice"
        assert client.connected


async def test_refused_connections_raise_typed_errors(server: LiveServer) -> None:
    with pytest.raises(Unauthorized) as bad:
        async with Client(server.url, token="not-a-jwt"):
            pass
    assert bad.value.code == "unauthorized"
    with pytest.raises(Unauthorized):
        async with Client(server.url):
            pass
    with pytest.raises(TokenExpired):
        async with Client(server.url, token=alice(server, ttl=-10)):
            pass
    # A provider is asked again when its first token has already expired.
    tokens = iter([alice(server, ttl=-10), alice(server)])
    async with Client(server.url, token=lambda: next(tokens)) as client:
        assert client.connected
    assert isinstance(bad.value, TandemError)


async def test_unsubscribe_stops_delivery_and_allows_subscribing_again(
    server: LiveServer,
) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        Client(server.url, token=alice(server)) as client,
    ):
        async with client.subscribe("room:again") as sub:
            await api.publish("room:again", "chat.message", 1)
            assert len(await take(sub, 1)) == 1
        await api.publish("room:again", "chat.message", 2)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(sub), 1)
        async with client.subscribe("room:again") as sub2:
            await api.publish("room:again", "chat.message", 3)
            (item,) = messages(await take(sub2, 1))
            assert item.data == 3


async def test_resume_from_a_saved_position(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        async with (
            Client(server.url, token=alice(server)) as client,
            client.subscribe("room:resume") as sub,
        ):
            for i in range(3):
                await api.publish("room:resume", "chat.message", i)
            await take(sub, 3)
            saved = sub.position
        assert saved is not None
        for i in range(3, 8):
            await api.publish("room:resume", "chat.message", i)
        async with (
            Client(server.url, token=alice(server)) as client,
            client.subscribe("room:resume", since=saved) as sub,
        ):
            assert sub.recovered is True
            got = messages(await take(sub, 5))
            assert [m.data for m in got] == [3, 4, 5, 6, 7]
            assert got[0].offset == saved.offset + 1
            await nothing_before(sub, api.publish("room:resume", SENTINEL, None))


async def test_one_subscription_per_channel_and_client(server: LiveServer) -> None:
    async with (
        Client(server.url, token=alice(server)) as client,
        client.subscribe("room:once"),
    ):
        with pytest.raises(ValueError, match="already subscribed"):
            async with client.subscribe("room:once"):
                pass


def test_message_envelope_parsing() -> None:
    envelope = {
        "channel": "job:1",
        "type": "job.progress",
        "offset": 3,
        "epoch": "e1",
        "ts": 1.5,
        "data": {"progress": 10},
    }
    msg = Message.from_envelope(envelope)
    assert msg.position == ("e1", 3)
    with pytest.raises(ValueError):
        Message.from_envelope({**envelope, "offset": "3"})


async def test_polling_with_upgrade(server: LiveServer) -> None:
    # Pure long-polling works too, but a closed long-polling client leaves its last GET held
    # on the server for a ping interval, which slows the module server's shutdown by 10 s.
    async with (
        Client(server.url, token=alice(server), transports=None) as client,
        client.subscribe("room:poll") as sub,
    ):
        result = await client.publish("room:poll", "chat.message", {"via": "upgrade"})
        (msg,) = messages(await take(sub, 1))
        assert msg.offset == result.offset and msg.data == {"via": "upgrade"}
