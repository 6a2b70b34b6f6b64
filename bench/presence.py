"""Presence join-to-visible latency, across two nodes sharing Redis (or on one node).

Usage: .venv/bin/python -m bench.presence [--nodes 1|2] [--joins N]

An observer on the last node subscribes to a room without being a member; one after the other,
N users connect to the first node and subscribe with presence. Each figure is the time from the
joiner sending `subscribe` to the observer receiving its `presence.join` (then from `unsubscribe`
to `presence.leave`, which needs no grace period). Bounded in count and time; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import socketio

from bench.cluster import local_nodes
from tests.support.live import LiveServer

CHANNEL = "room:presence-bench"


async def measure(nodes: list[LiveServer], joins: int) -> None:
    seen: dict[tuple[str, str], asyncio.Future[float]] = {}
    observer = socketio.AsyncClient(reconnection=False)

    def arrived(kind: str, envelope: dict[str, Any]) -> None:
        future = seen.get((kind, envelope["data"]["user"]))
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    observer.on("presence.join", lambda envelope: arrived("join", envelope))
    observer.on("presence.leave", lambda envelope: arrived("leave", envelope))
    await observer.connect(
        nodes[-1].url,
        auth={"token": nodes[-1].token("observer", channels=["room:*"])},
        transports=["websocket"],
    )
    await observer.call("subscribe", {"channel": CHANNEL})
    latencies: dict[str, list[float]] = {"join": [], "leave": []}
    loop = asyncio.get_running_loop()
    for i in range(joins):
        user = f"bench-{i}"
        joiner = socketio.AsyncClient(reconnection=False)
        await joiner.connect(
            nodes[0].url,
            auth={"token": nodes[0].token(user, channels=["room:*"])},
            transports=["websocket"],
        )
        for kind, request in (
            ("join", ("subscribe", {"channel": CHANNEL, "presence": True})),
            ("leave", ("unsubscribe", {"channel": CHANNEL})),
        ):
            seen[(kind, user)] = loop.create_future()
            began = time.perf_counter()
            reply = await joiner.call(*request, timeout=10)
            assert reply["ok"], reply
            latencies[kind].append(await asyncio.wait_for(seen[(kind, user)], 10) - began)
        await joiner.disconnect()
    await observer.disconnect()
    for kind, values in latencies.items():
        values.sort()
        ms = [values[min(len(values) - 1, int(q * len(values)))] * 1000 for q in (0.5, 0.99, 1)]
        print(
            f"nodes={len(nodes)} {kind}s={len(values)}: {kind}-to-visible ms "
            f"p50 {ms[0]:.1f} p99 {ms[1]:.1f} max {ms[2]:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2)
    parser.add_argument("--joins", type=int, default=200)
    args = parser.parse_args()
    with local_nodes(args.nodes) as nodes:
        asyncio.run(measure(nodes, args.joins))


if __name__ == "__main__":
    main()
