"""Subscribers that keep reconnecting, to either of two nodes, while publications flow: every
ack plus the live events after it continue exactly where the subscriber was, at the
server's offsets (raw clients: nothing is deduplicated on the client side)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.redis import broker_url, redis_prefix
from tests.support.sio import connected

CHANNEL = "room:churn"
PUBLICATIONS = 500
RATE = 100.0
SUBSCRIBERS = 8


async def publish_all(nodes: list[LiveServer], accepted: list[int]) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        httpx.AsyncClient(base_url=nodes[0].url, headers=headers) as a,
        httpx.AsyncClient(base_url=nodes[1].url, headers=headers) as b,
    ):
        start = time.monotonic()
        for i in range(PUBLICATIONS):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            body = {"channel": CHANNEL, "event": "chat.message", "data": {"i": i}}
            response = await (a if i % 2 else b).post("/api/publish", json=body)
            assert response.status_code == 200, response.text
            accepted.append(response.json()["offset"])


async def churn(nodes: list[LiveServer], done: asyncio.Event, seed: int) -> list[dict[str, Any]]:
    """Reconnect every 0.1-0.4 s until publishing is done, then once more to catch up.
    Returns every session: its ack and the live envelopes that followed it."""
    rng = random.Random(seed)
    sessions: list[dict[str, Any]] = []
    position: dict[str, Any] | None = None
    token = nodes[0].token(f"sub{seed}", channels=[CHANNEL])
    last_round = False
    while not last_round:
        last_round = done.is_set()
        node = rng.choice(nodes)
        async with connected(node.url, token) as client:
            payload: dict[str, Any] = {"channel": CHANNEL}
            if position is not None:
                payload["since"] = position
            ack = await client.call("subscribe", payload)
            assert ack["ok"], ack
            await asyncio.sleep(0.5 if last_round else rng.uniform(0.1, 0.4))
            live = []
            while not client.events.empty():
                event, envelope = client.events.get_nowait()
                if event == "chat.message":
                    live.append(envelope)
        sessions.append({"ack": ack, "live": live})
        offsets = [p["offset"] for p in ack["publications"]] + [e["offset"] for e in live]
        position = {"epoch": ack["epoch"], "offset": offsets[-1] if offsets else ack["offset"]}
    return sessions


async def test_reconnecting_subscribers_get_everything_once_in_order(tmp_path: Path) -> None:
    async with redis_prefix() as prefix:
        env = {"TANDEM_BROKER_URL": broker_url(prefix)}
        with live_server(tmp_path / "a", env) as a, live_server(tmp_path / "b", env) as b:
            nodes = [a, b]
            accepted: list[int] = []
            done = asyncio.Event()
            subscribers = [
                asyncio.create_task(churn(nodes, done, seed)) for seed in range(SUBSCRIBERS)
            ]
            await publish_all(nodes, accepted)
            done.set()
            results = await asyncio.gather(*subscribers)
    assert accepted == list(range(1, PUBLICATIONS + 1))
    resubscribes = 0
    for seed, sessions in enumerate(results):
        seen: list[int] = []
        for number, session in enumerate(sessions):
            ack = session["ack"]
            if number:
                resubscribes += 1
                assert ack["recovered"], f"subscriber {seed}: could not recover: {ack}"
            got = [p["offset"] for p in ack["publications"]] + [
                e["offset"] for e in session["live"]
            ]
            start = seen[-1] if seen else ack["offset"] - len(ack["publications"])
            # Each session continues where the last one ended: no gap, no duplicate.
            assert got == list(range(start + 1, start + 1 + len(got))), (
                f"subscriber {seed}, session {number}: after {start} got {got[:10]}..."
            )
            seen += got
        assert seen[-1] == PUBLICATIONS, f"subscriber {seed} stopped at {seen[-1]}"
    print(f"churn: {resubscribes} resubscribes, every ack and live event exactly once")
