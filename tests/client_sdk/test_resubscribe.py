"""After a reconnect the SDK re-subscribes everything in subscribe_many batches, with positions.

Against a node that restarts for real (its streams in Redis outlive it), a node whose
connections drop, and a server from before subscribe_many (one subscribe each).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import socketio
from aiohttp import web

from client_sdk import Client, Message, Subscription
from tests.client_sdk.helpers import (
    assert_contiguous,
    fast_client,
    messages,
    take,
    wait_disconnected,
)
from tests.support.live import API_KEY, LiveServer, free_port, live_server
from tests.support.proxy import TcpProxy
from tests.support.redis import broker_url, delete_prefix, unique_prefix


async def publish(node: LiveServer, channel: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers) as http:
        for i in range(count):
            body = {"channel": channel, "event": "chat.message", "data": i}
            assert (await http.post("/api/publish", json=body)).status_code == 200


async def hold(stack: AsyncExitStack, client: Client, channels: list[str]) -> list[Subscription]:
    return [await stack.enter_async_context(client.subscribe(name)) for name in channels]


async def test_a_restarted_node_gets_a_board_of_61_channels_back_in_one_request(
    tmp_path: Path,
) -> None:
    prefix = unique_prefix()
    env = {"TANDEM_BROKER_URL": broker_url(prefix)}
    channels = [f"room:board-{i}" for i in range(61)]
    old = live_server(tmp_path, env)
    node = await asyncio.to_thread(old.__enter__)
    new = None
    try:
        token = node.token("board", channels=["room:*"])
        async with (
            TcpProxy(node.port) as proxy,
            fast_client(proxy.url, token) as client,
            AsyncExitStack() as stack,
        ):
            subs = await hold(stack, client, channels)
            for name in channels:
                await publish(node, name, 1)
            before = [messages(await take(sub, 1)) for sub in subs]
            # A deploy: the node drains (server.notice shutdown) and a new process starts.
            proxy.pause()
            await asyncio.to_thread(old.__exit__, None, None, None)
            await wait_disconnected(client)
            new = live_server(tmp_path, env)
            node = await asyncio.to_thread(new.__enter__)
            for name in channels[:10]:  # published while the board was away
                await publish(node, name, 2)
            proxy.target_port = node.port
            proxy.resume()
            for sub, seen in zip(subs[:10], before[:10], strict=True):
                missed = messages(await take(sub, 2))
                assert_contiguous([*seen, *missed])
                assert [m.data for m in missed] == [0, 1]
            await publish(node, channels[-1], 1)  # and live after the replay
            last = await take(subs[-1], 1)
            assert isinstance(last[0], Message) and last[0].offset == before[-1][0].offset + 1
            assert all(sub.recovered for sub in subs)
            assert await asyncio.to_thread(node.subscribe_counts) == {
                "batch": 1.0,
                "single": 0.0,
                "rate_limited": 0.0,
            }
    finally:
        if new is not None:
            await asyncio.to_thread(new.__exit__, None, None, None)
        await delete_prefix(prefix)


async def test_more_channels_than_a_batch_go_back_in_batches_of_100(server: LiveServer) -> None:
    channels = [f"room:many-{i}" for i in range(120)]
    token = server.token("many", channels=["room:*"])
    async with (
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, token, request_timeout=20) as client,
        AsyncExitStack() as stack,
    ):
        subs = await hold(stack, client, channels)
        before = await asyncio.to_thread(server.subscribe_counts)
        await publish(server, channels[0], 1)
        await publish(server, channels[119], 1)
        await take(subs[0], 1)
        await take(subs[119], 1)
        proxy.pause()
        await proxy.cut()
        await wait_disconnected(client)
        await publish(server, channels[0], 3)
        await publish(server, channels[119], 3)
        proxy.resume()
        assert [m.data for m in messages(await take(subs[0], 3))] == [0, 1, 2]
        assert [m.data for m in messages(await take(subs[119], 3))] == [0, 1, 2]
        after = await asyncio.to_thread(server.subscribe_counts)
        assert after["batch"] - before["batch"] == 2.0
        assert after["single"] == before["single"]
        assert all(sub.recovered and sub.active for sub in subs)


class OldServer:
    """A server from before subscribe_many: `subscribe`, and Tandem's answer to the rest."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="aiohttp")
        self.app = web.Application()
        self.sio.attach(self.app)
        self.requests: list[tuple[str, Any]] = []
        self.port = free_port()
        self.sio.on("subscribe", self._subscribe)
        self.sio.on("*", self._unknown)

    async def _subscribe(self, sid: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("subscribe", payload))
        since = payload.get("since")
        return {
            "ok": True,
            "channel": payload["channel"],
            "epoch": "e1",
            "offset": since["offset"] if since else 5,
            "recovered": since is not None,
            "publications": [],
            "state": None,
        }

    async def _unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        self.requests.append((event, args))
        message = f"unknown event {event!r}; use subscribe, unsubscribe, publish, presence"
        return {"ok": False, "error": {"code": "invalid_payload", "message": message}}

    async def kick_all(self) -> None:
        for sid, _ in list(self.sio.manager.get_participants("/", None)):
            await self.sio.disconnect(sid)


async def test_a_server_without_subscribe_many_gets_one_subscribe_each() -> None:
    old = OldServer()
    runner = web.AppRunner(old.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", old.port).start()
    try:
        url = f"http://127.0.0.1:{old.port}"
        async with fast_client(url, "any-token") as client, AsyncExitStack() as stack:
            subs = await hold(stack, client, ["room:a", "room:b", "room:c"])
            old.requests.clear()
            await old.kick_all()  # it may be back before a wait for the gap could see it
            for _ in range(500):
                if len(old.requests) >= 4:
                    break
                await asyncio.sleep(0.01)
            event, _ = old.requests[0]
            assert event == "subscribe_many"
            again = sorted((e, p["channel"], p.get("since")) for e, p in old.requests[1:])
            assert again == [
                ("subscribe", name, {"epoch": "e1", "offset": 5})
                for name in ("room:a", "room:b", "room:c")
            ]
            assert all(sub.active and sub.recovered for sub in subs)
    finally:
        await runner.cleanup()
