"""Several real nodes sharing one Redis: fan-out, order and recovery across nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.redis import broker_url, delete_prefix, unique_prefix
from tests.support.sio import connected, sentinel


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    prefix = unique_prefix()
    env = {"TANDEM_BROKER_URL": broker_url(prefix)}
    with ExitStack() as stack:
        yield [
            stack.enter_context(live_server(tmp_path_factory.mktemp(f"node{i}"), env))
            for i in range(3)
        ]
    asyncio.run(delete_prefix(prefix))


async def publish(node: LiveServer, channel: str, i: int, event: str = "chat.message") -> int:
    async with httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as http:
        response = await http.post(
            "/api/publish", json={"channel": channel, "event": event, "data": {"i": i}}
        )
    assert response.status_code == 200, response.text
    offset: int = response.json()["offset"]
    return offset


async def test_every_subscriber_on_every_node_gets_everything_once_in_order(
    nodes: list[LiveServer],
) -> None:
    token = nodes[0].token("alice", channels=["room:multi"])
    async with (
        connected(nodes[0].url, token) as a,
        connected(nodes[1].url, token) as b,
        connected(nodes[2].url, token) as c,
    ):
        for client in (a, b, c):
            assert (await client.call("subscribe", {"channel": "room:multi"}))["ok"]
        offsets = [await publish(nodes[i % 3], "room:multi", i) for i in range(60)]
        assert offsets == list(range(1, 61))
        for client in (a, b, c):
            got = [env["offset"] for _, env in await client.take(60)]
            assert got == offsets
        # Then a sentinel: on every node, nothing (no duplicate) may come before it.
        await publish(nodes[0], "room:multi", -1, event="test.sentinel")
        for client in (a, b, c):
            await client.quiet_until(sentinel("test.sentinel"))


async def test_socket_publish_on_one_node_reaches_the_others(nodes: list[LiveServer]) -> None:
    token = nodes[0].token("alice", channels=["room:chat"])
    async with connected(nodes[0].url, token) as sender, connected(nodes[1].url, token) as reader:
        await reader.call("subscribe", {"channel": "room:chat"})
        ack = await sender.call(
            "publish", {"channel": "room:chat", "event": "chat.message", "data": "hi"}
        )
        event, envelope = await reader.next()
    assert ack["ok"] and envelope["offset"] == ack["offset"] and envelope["data"] == "hi"


async def test_recovery_on_a_different_node(nodes: list[LiveServer], tmp_path: Path) -> None:
    token = nodes[0].token("alice", channels=["room:move"])
    async with connected(nodes[0].url, token) as client:
        ack = await client.call("subscribe", {"channel": "room:move"})
        await publish(nodes[0], "room:move", 0)
        _, first = await client.next()
    missed = [await publish(nodes[2], "room:move", i) for i in range(1, 11)]
    async with connected(nodes[1].url, token) as client:
        since = {"epoch": ack["epoch"], "offset": first["offset"]}
        again = await client.call("subscribe", {"channel": "room:move", "since": since})
    assert again["recovered"] is True
    assert [p["offset"] for p in again["publications"]] == missed


async def test_idempotency_holds_across_nodes(nodes: list[LiveServer]) -> None:
    body = {"channel": "room:idem", "event": "chat.message", "data": 1}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "pay-42"}
    results = []
    for node in nodes:
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as http:
            results.append((await http.post("/api/publish", json=body)).json())
    assert len({r["offset"] for r in results}) == 1
    assert [r["duplicate"] for r in results] == [False, True, True]
