"""The msgpack serializer end to end (binary payloads survive as bytes)."""

from __future__ import annotations

from client_sdk import ServerAPI
from tests.client_sdk.helpers import fast_client, messages, take
from tests.support.live import API_KEY, LiveServer
from tests.support.proxy import TcpProxy


async def test_msgpack_round_trip(msgpack_server: LiveServer) -> None:
    server = msgpack_server
    token = server.token("alice", channels=["room:*"])
    async with (
        TcpProxy(server.port) as proxy,
        ServerAPI(server.url, API_KEY) as api,
        fast_client(proxy.url, token, serializer="msgpack") as client,
        client.subscribe("room:mp") as sub,
    ):
        data = {"text": "héllo", "n": 1.5, "raw": b"\x00\xff", "list": [1, None, True]}
        result = await client.publish("room:mp", "chat.message", data, id="mp-1")
        (msg,) = messages(await take(sub, 1))
        assert msg.data == data
        assert msg.offset == result.offset and msg.epoch == result.epoch

        # Recovery works over msgpack too.
        proxy.pause()
        await proxy.cut()
        for i in range(3):
            await api.publish("room:mp", "chat.message", {"i": i})
        proxy.resume()
        got = messages(await take(sub, 3))
        assert [m.data for m in got] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert got[0].offset == msg.offset + 1
        assert sub.recovered is True
