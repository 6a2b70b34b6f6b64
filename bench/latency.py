"""Publish-to-deliver latency at a steady rate, on one node or across two nodes sharing Redis.

Usage: .venv/bin/python -m bench.latency [--nodes 1|2] [--subscribers N] [--rate R] [--seconds S]

Publications go in over HTTP to the first node; subscribers (python-socketio clients in this
process) sit on the last node. Latency is the subscriber's receive time minus the envelope's
`ts` (set by the broker when it assigned the offset), on one machine's clock. Bounded in time
and count; stops by itself. A quick figure, not the benchmark of the performance work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
import socketio

from bench.cluster import local_nodes
from tests.support.live import API_KEY, LiveServer


async def measure(nodes: list[LiveServer], subscribers: int, rate: float, seconds: float) -> None:
    channel = "room:bench"
    token = nodes[0].token("bench", channels=["room:*"])
    latencies: list[float] = []
    received = 0
    everything = asyncio.Event()
    clients = []
    total = int(rate * seconds)
    for _ in range(subscribers):
        client = socketio.AsyncClient(reconnection=False)

        @client.on("chat.message")
        async def on_message(envelope: dict[str, object]) -> None:
            nonlocal received
            received += 1
            latencies.append(time.time() - float(envelope["ts"]))  # type: ignore[arg-type]
            if received == total * subscribers:
                everything.set()

        await client.connect(nodes[-1].url, auth={"token": token}, transports=["websocket"])
        await client.call("subscribe", {"channel": channel})
        clients.append(client)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=nodes[0].url, headers=headers) as http:
        start = time.monotonic()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            body = {"channel": channel, "event": "chat.message", "data": {"i": i, "pad": "x" * 150}}
            response = await http.post("/api/publish", json=body)
            response.raise_for_status()
    try:
        await asyncio.wait_for(everything.wait(), 10)
    except TimeoutError:
        pass  # reported below as missing deliveries
    for client in clients:
        await client.disconnect()
    latencies.sort()

    def ms(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(
        f"nodes={len(nodes)} subscribers={subscribers} rate={rate}/s seconds={seconds}: "
        f"deliveries {received}/{total * subscribers}, latency ms p50 {ms(0.5):.1f} "
        f"p99 {ms(0.99):.1f} max {ms(1.0):.1f} mean {statistics.fmean(latencies) * 1000:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2)
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with local_nodes(args.nodes) as nodes:
        asyncio.run(measure(nodes, args.subscribers, args.rate, args.seconds))


if __name__ == "__main__":
    main()
