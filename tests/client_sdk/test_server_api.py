"""ServerAPI (HTTP) against a real node: publish, history, tokens, errors and retries."""

from __future__ import annotations

import asyncio

import pytest

from client_sdk import (
    Client,
    ConnectionLost,
    InvalidPayload,
    PermissionDenied,
    ServerAPI,
    Unauthorized,
    UnknownChannel,
    UnrecoverablePosition,
)
from tests.client_sdk.helpers import eventually, messages, take
from tests.support.live import API_KEY, LiveServer
from tests.support.proxy import TcpProxy


async def test_publish_and_history(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        results = [await api.publish("room:hist", "chat.message", {"n": i}) for i in range(5)]
        assert [r.offset for r in results] == list(range(1, 6))
        assert len({r.epoch for r in results}) == 1
        history = await api.history("room:hist")
        assert history.channel == "room:hist"
        assert (history.epoch, history.offset) == (results[-1].epoch, results[-1].offset)
        assert [m.data for m in history.publications] == [{"n": i} for i in range(5)]
        since = await api.history("room:hist", since=(results[1].epoch, results[1].offset))
        assert [m.offset for m in since.publications] == [3, 4, 5]
        limited = await api.history("room:hist", limit=2)
        assert [m.offset for m in limited.publications] == [4, 5]
        with pytest.raises(UnrecoverablePosition):
            await api.history("room:hist", since=("another-epoch", 1))


async def test_idempotency_key_dedupes(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        first = await api.publish("room:key", "chat.message", 1, idempotency_key="k-1")
        again = await api.publish("room:key", "chat.message", 1, idempotency_key="k-1")
        assert not first.duplicate
        assert again.duplicate
        assert again.offset == first.offset
        # Without a key each call gets its own random one: two publications.
        a = await api.publish("room:key", "chat.message", 2)
        b = await api.publish("room:key", "chat.message", 2)
        assert not a.duplicate and not b.duplicate
        assert b.offset == a.offset + 1


async def test_created_token_connects_with_its_grants(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        token = await api.create_token("carol", channels=["room:team"], ttl=60, name="Carol")
        assert token.token.count(".") == 2
        assert token.expires_at > 0
        async with Client(server.url, token=token.token) as client:
            async with client.subscribe("room:team") as sub:
                await api.publish("room:team", "chat.message", "hello")
                (msg,) = messages(await take(sub, 1))
                assert msg.data == "hello"
            with pytest.raises(PermissionDenied):
                async with client.subscribe("room:other"):
                    pass
        admin = await api.create_token("ops", scope="admin")
        async with Client(server.url, token=admin.token) as client:
            async with client.subscribe("job:anything"):
                pass


async def test_http_errors_are_typed(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        with pytest.raises(UnknownChannel):
            await api.publish("nope:1", "chat.message", {})
        with pytest.raises(InvalidPayload):
            await api.publish("room:x", "bad name", {})
        with pytest.raises(PermissionDenied):
            await api.publish("room:x", "server.notice", {})
        with pytest.raises(InvalidPayload):
            await api.create_token("x", ttl=10**9)
    async with ServerAPI(server.url, "wrong-key", max_attempts=1) as api:
        with pytest.raises(Unauthorized):
            await api.publish("room:x", "chat.message", {})


async def test_publish_retries_connection_errors_with_the_same_key(server: LiveServer) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(proxy.url, API_KEY, max_attempts=20, backoff=0.05, backoff_max=0.2) as api,
        ServerAPI(server.url, API_KEY) as direct,
    ):
        before = await direct.history("room:retry")
        proxy.pause()
        publish = asyncio.create_task(
            api.publish("room:retry", "chat.message", "once", idempotency_key="retry-1")
        )
        await eventually(lambda: proxy.refused >= 2)
        assert not publish.done()  # refused connections are being retried
        proxy.resume()
        result = await asyncio.wait_for(publish, 10)
        assert not result.duplicate
        assert result.offset == before.offset + 1
        again = await api.publish("room:retry", "chat.message", "once", idempotency_key="retry-1")
        assert again.duplicate and again.offset == result.offset
        after = await direct.history("room:retry")
        assert [m.data for m in after.publications] == ["once"]


async def test_gives_up_after_max_attempts(server: LiveServer) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(proxy.url, API_KEY, max_attempts=3, backoff=0.01, backoff_max=0.02) as api,
    ):
        proxy.pause()
        with pytest.raises(ConnectionLost) as failure:
            await asyncio.wait_for(api.publish("room:x", "chat.message", 1), 10)
        assert failure.value.code == "connection_lost"
        assert failure.value.retryable is True
