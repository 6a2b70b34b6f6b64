"""Ordering, recovery with `since`, and the race-free join, over real connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.sio import connected, sentinel


async def publish_many(
    server: LiveServer, channel: str, count: int, start: int = 0, event: str = "chat.message"
) -> list[int]:
    offsets = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        for i in range(start, start + count):
            body = {"channel": channel, "event": event, "data": {"i": i}}
            response = await http.post("/api/publish", json=body)
            assert response.status_code == 200, response.text
            offsets.append(response.json()["offset"])
    return offsets


async def test_recovery_replays_exactly_what_was_missed(server: LiveServer) -> None:
    token = server.token("alice", channels=["room:rec"])
    async with connected(server.url, token) as client:
        ack = await client.call("subscribe", {"channel": "room:rec"})
        await publish_many(server, "room:rec", 3)
        seen = [env["offset"] for _, env in await client.take(3)]
        position = {"epoch": ack["epoch"], "offset": seen[-1]}
    missed = await publish_many(server, "room:rec", 10, start=3)
    async with connected(server.url, token) as client:
        ack = await client.call("subscribe", {"channel": "room:rec", "since": position})
        assert ack["recovered"] is True
        assert [p["offset"] for p in ack["publications"]] == missed
        assert [p["data"]["i"] for p in ack["publications"]] == list(range(3, 13))
        assert ack["offset"] == missed[-1]
        await publish_many(server, "room:rec", 1, start=13)
        _, live = await client.next()
        assert live["offset"] == missed[-1] + 1


async def test_unrecoverable_positions_return_state_not_a_partial_replay(tmp_path: Path) -> None:
    with live_server(tmp_path, {"TANDEM_HISTORY_SIZE": "5"}) as server:
        token = server.token("ops", scope="admin")
        async with connected(server.url, token) as client:
            ack = await client.call("subscribe", {"channel": "flight:77"})
            assert ack["state"] is None and ack["offset"] == 0
        await publish_many(server, "flight:77", 12)
        async with connected(server.url, token) as client:
            since = {"epoch": ack["epoch"], "offset": 0}
            again = await client.call("subscribe", {"channel": "flight:77", "since": since})
            assert again["recovered"] is False and again["publications"] == []
            assert again["offset"] == 12
            assert again["state"]["latest"]["data"] == {"i": 11}
            foreign = await client.call(
                "subscribe", {"channel": "flight:77", "since": {"epoch": "gone", "offset": 3}}
            )
            assert foreign["recovered"] is False and foreign["publications"] == []


async def burst_around(
    server: LiveServer, channel: str, started: asyncio.Event, subscribed: asyncio.Event
) -> list[int]:
    """Publish 10, say so, go on until the subscribe has been answered, then 20 more: some
    publications come before the subscribe, some while it is handled, some after."""
    offsets: list[int] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        after = None
        for i in range(2000):
            body = {"channel": channel, "event": "chat.message", "data": {"i": i}}
            response = await http.post("/api/publish", json=body)
            assert response.status_code == 200, response.text
            offsets.append(response.json()["offset"])
            if i == 9:
                started.set()
            if after is None and subscribed.is_set():
                after = i + 20
            if i == after:
                return offsets
    raise AssertionError("the subscribe was not answered during 2,000 publications")


async def test_subscribe_during_a_burst_sees_every_offset_once(server: LiveServer) -> None:
    token = server.token("alice", channels=["room:burst"])
    started, subscribed = asyncio.Event(), asyncio.Event()
    async with connected(server.url, token) as client:
        burst = asyncio.create_task(burst_around(server, "room:burst", started, subscribed))
        await asyncio.wait_for(started.wait(), 10)
        ack = await client.call("subscribe", {"channel": "room:burst"})
        subscribed.set()
        offsets = await burst
        got = [p["offset"] for p in ack["publications"]]
        live_count = offsets[-1] - ack["offset"]
        # Subscribed mid-burst: after the first ten, with at least twenty still to come.
        assert ack["offset"] >= offsets[9] and live_count >= 20, (ack["offset"], live_count)
        got += [env["offset"] for _, env in await client.take(live_count)]
        await publish_many(server, "room:burst", 1, event="test.sentinel")
        await client.quiet_until(sentinel("test.sentinel"))
    assert got == list(range(ack["offset"] - len(ack["publications"]) + 1, offsets[-1] + 1))
    assert got[-1] == offsets[-1]


async def test_order_is_kept_for_many_subscribers(server: LiveServer) -> None:
    token = server.token("alice", channels=["room:fan"])
    clients = []
    async with connected(server.url, token) as a, connected(server.url, token) as b:
        for client in (a, b):
            await client.call("subscribe", {"channel": "room:fan"})
            clients.append(client)
        offsets = await publish_many(server, "room:fan", 40)
        for client in clients:
            got = [env["offset"] for _, env in await client.take(40)]
            assert got == offsets


async def test_unsubscribe_stops_delivery(server: LiveServer) -> None:
    async with connected(server.url, server.token("alice", channels=["room:u"])) as client:
        await client.call("subscribe", {"channel": "room:u"})
        assert (await client.call("unsubscribe", {"channel": "room:u"}))["ok"] is True
        async with connected(server.url, server.token("bob", channels=["room:u"])) as watcher:
            assert (await watcher.call("subscribe", {"channel": "room:u"}))["ok"] is True
            await publish_many(server, "room:u", 2)
            # The watcher has both, so this node has fanned them out; what it had queued for
            # the client then arrives before the answer to a later request.
            await watcher.take(2)
            await client.quiet_until(client.round_trip())


async def test_rate_limit_answers_rate_limited(server: LiveServer) -> None:
    async with connected(server.url, server.token("alice")) as client:
        acks = await asyncio.gather(
            *(client.call("subscribe", {"channel": "flight:LH1"}) for _ in range(60))
        )
    codes = [ack["error"]["code"] for ack in acks if not ack["ok"]]
    assert codes and set(codes) == {"rate_limited"}
    assert all(ack["error"]["retryable"] for ack in acks if not ack["ok"])


async def test_channel_cap_per_connection(tmp_path: Path) -> None:
    with live_server(tmp_path, {"TANDEM_MAX_CHANNELS_PER_CONNECTION": "2"}) as server:
        async with connected(server.url, server.token("alice")) as client:
            for flight in ("flight:A1", "flight:A2", "flight:A2"):
                assert (await client.call("subscribe", {"channel": flight}))["ok"]
            over = await client.call("subscribe", {"channel": "flight:A3"})
    assert over["error"]["code"] == "bad_request"
