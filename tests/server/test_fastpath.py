"""The fan-out fast path keeps every guarantee: one fan-out to websocket, long-polling and
upgraded clients, JSON and msgpack, arrives complete and in order, with acks in between."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import socketio

from tests.support.live import API_KEY, LiveServer, live_server

COUNT = 150
# The publisher sends faster than a client's default request rate.
UNLIMITED = {"TANDEM_CLIENT_RATE_PER_S": "100000", "TANDEM_CLIENT_BURST": "100000"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("node"), UNLIMITED) as node:
        yield node


@pytest.fixture(scope="module")
def msgpack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {**UNLIMITED, "TANDEM_SERIALIZER": "msgpack"}
    with live_server(tmp_path_factory.mktemp("node-msgpack"), env) as node:
        yield node


@asynccontextmanager
async def subscriber(
    url: str, token: str, channel: str, transports: list[str], serializer: str
) -> AsyncIterator[list[dict[str, Any]]]:
    client = socketio.AsyncClient(reconnection=False, serializer=serializer)
    received: list[dict[str, Any]] = []

    @client.on("fan.out")
    async def on_event(envelope: dict[str, Any]) -> None:
        received.append(envelope)

    await client.connect(url, auth={"token": token}, transports=transports, wait_timeout=5)
    try:
        ack = await client.call("subscribe", {"channel": channel}, timeout=5)
        assert ack["ok"], ack
        yield received
    finally:
        await client.disconnect()
        await client.shutdown()


async def fan_out(server: LiveServer, serializer: str) -> None:
    channel = f"room:fan-{uuid.uuid4().hex[:8]}"
    token = server.token("fan", channels=["room:*"])
    kinds = {
        "websocket": ["websocket"],
        "polling": ["polling"],
        "upgraded": ["polling", "websocket"],
    }
    async with AsyncExitStack() as stack:
        inboxes = {
            f"{kind}-{n}": await stack.enter_async_context(
                subscriber(server.url, token, channel, transports, serializer)
            )
            for kind, transports in kinds.items()
            for n in range(2)
        }
        publisher = socketio.AsyncClient(reconnection=False, serializer=serializer)
        await publisher.connect(
            server.url, auth={"token": token}, transports=["websocket"], wait_timeout=5
        )
        stack.push_async_callback(publisher.shutdown)
        stack.push_async_callback(publisher.disconnect)
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as http:
            for i in range(COUNT):
                body = {"channel": channel, "event": "fan.out", "data": {"i": i}}
                if i % 2:  # half over the socket: its acks interleave with the deliveries
                    ack = await publisher.call("publish", body, timeout=5)
                    assert ack["ok"], ack
                else:
                    response = await http.post("/api/publish", json=body)
                    assert response.status_code == 200, response.text
            # Then a sentinel: anything more (a duplicate) would arrive before it.
            sentinel = {"channel": channel, "event": "fan.out", "data": {"i": "end"}}
            assert (await http.post("/api/publish", json=sentinel)).status_code == 200
        try:
            async with asyncio.timeout(15):
                # Polling: six inboxes fill from callbacks; one event each would be noise.
                while not all(  # noqa: ASYNC110
                    inbox and inbox[-1]["data"]["i"] == "end" for inbox in inboxes.values()
                ):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            counts = {name: len(inbox) for name, inbox in inboxes.items()}
            raise AssertionError(f"deliveries missing: {counts}") from None
    for name, inbox in inboxes.items():
        assert [e["data"]["i"] for e in inbox] == [*range(COUNT), "end"], name
        offsets = [e["offset"] for e in inbox]
        assert offsets == list(range(offsets[0], offsets[0] + COUNT + 1)), name


async def test_fan_out_with_json_clients_is_complete_and_ordered(server: LiveServer) -> None:
    await fan_out(server, "default")


async def test_fan_out_with_msgpack_clients_is_complete_and_ordered(
    msgpack_server: LiveServer,
) -> None:
    await fan_out(msgpack_server, "msgpack")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_latest_value_events_are_marked(server: LiveServer, transport: str) -> None:
    channel = f"room:latest-{uuid.uuid4().hex[:8]}"
    token = server.token("fan", channels=["room:*"])
    client = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    client.on("*", lambda event, env: got.put_nowait((event, env)))
    await client.connect(server.url, auth={"token": token}, transports=[transport])
    try:
        assert (await client.call("subscribe", {"channel": channel}))["ok"]
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as http:
            for event in ("flight.position", "chat.message"):
                body: dict[str, Any] = {"channel": channel, "event": event, "data": {}}
                assert (await http.post("/api/publish", json=body)).status_code == 200
        async with asyncio.timeout(5):
            position, message = await got.get(), await got.get()
        assert position[0] == "flight.position" and position[1]["latest"] is True
        assert message[0] == "chat.message" and "latest" not in message[1]
    finally:
        await client.disconnect()
        await client.shutdown()


# -- events taken in directly (SocketServer.fast_event) -----------------------------------------


async def test_pipelined_socket_requests_are_answered_in_order_with_their_acks(
    server: LiveServer,
) -> None:
    """Requests of one websocket client, sent without waiting, are each answered by its own
    ack, and its publications come back to it in order after its subscribe's ack."""
    channel = f"room:pipe-{uuid.uuid4().hex[:8]}"
    token = server.token("pipe", channels=["room:*"])
    async with subscriber(server.url, token, channel, ["websocket"], "default") as inbox:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(server.url, auth={"token": token}, transports=["websocket"])
        try:
            acks = await asyncio.gather(
                *(
                    client.call(
                        "publish", {"channel": channel, "event": "fan.out", "data": {"i": i}}
                    )
                    for i in range(COUNT)
                ),
                client.call("subscribe", {"channel": "nope:x"}),
                client.call("publish", {"channel": channel, "event": "fan.out"}, timeout=5),
            )
        finally:
            await client.disconnect()
            await client.shutdown()
        *published, unknown, last = acks
        assert [a["ok"] for a in published] == [True] * COUNT
        assert sorted(a["offset"] for a in published) == list(range(1, COUNT + 1))
        assert unknown["error"]["code"] == "unknown_channel"
        assert last["offset"] == COUNT + 1
        async with asyncio.timeout(5):
            while len(inbox) < COUNT + 1:  # noqa: ASYNC110 (the inbox fills from a callback)
                await asyncio.sleep(0.02)
    assert [e["offset"] for e in inbox] == list(range(1, COUNT + 2))


async def test_bytes_in_a_publication_reach_subscribers_and_acks(server: LiveServer) -> None:
    """A JSON client may publish bytes (a binary event). Its delivery, and the history in a
    later subscribe's ack, then need Socket.IO's binary packets, which the direct paths leave
    to python-socketio."""
    channel = f"room:bin-{uuid.uuid4().hex[:8]}"
    token = server.token("bin", channels=["room:*"])
    blob = bytes(range(256))
    async with subscriber(server.url, token, channel, ["websocket"], "default") as inbox:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(server.url, auth={"token": token}, transports=["websocket"])
        try:
            body = {"channel": channel, "event": "fan.out", "data": {"blob": blob}}
            published = await client.call("publish", body, timeout=5)
            assert published["ok"], published
            since = {"epoch": published["epoch"], "offset": 0}
            ack = await client.call("subscribe", {"channel": channel, "since": since}, timeout=5)
            assert ack["ok"] and ack["recovered"], ack
            assert ack["publications"][0]["data"] == {"blob": blob}
            # and the connection still works both ways
            assert (await client.call("publish", {**body, "data": 1}, timeout=5))["ok"]
        finally:
            await client.disconnect()
            await client.shutdown()
        async with asyncio.timeout(5):
            while len(inbox) < 2:  # noqa: ASYNC110 (the inbox fills from a callback)
                await asyncio.sleep(0.02)
    assert [e["data"] for e in inbox] == [{"blob": blob}, 1]
