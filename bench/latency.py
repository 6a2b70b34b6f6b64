"""Publish-to-deliver latency at a steady rate, on one node or across two nodes sharing Redis.

Usage: .venv/bin/python -m bench.latency [--nodes 1|2] [--subscribers N] [--rate R] [--seconds S]
           [--channels C] [--redis-cluster]

Publications go in over HTTP to the first node, round-robin over C channels; subscribers
(python-socketio clients in this process, spread evenly over the channels) sit on the last
node. With --redis-cluster the two nodes share a private Redis Cluster (three primaries, three
replicas, from the local redis-server) instead of Redis: the channels land on its shards.
Latency is the subscriber's receive time minus the envelope's `ts` (set by the broker when it
assigned the offset), on one machine's clock. Bounded in time and count; stops by itself. A
quick figure, not the benchmark of the performance work.
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


async def measure(
    nodes: list[LiveServer], subscribers: int, rate: float, seconds: float, channels: int = 1
) -> None:
    names = [f"room:bench{j}" if channels > 1 else "room:bench" for j in range(channels)]
    token = nodes[0].token("bench", channels=["room:*"])
    latencies: list[float] = []
    received = 0
    everything = asyncio.Event()
    clients = []
    total = int(rate * seconds)
    listening = [0] * channels  # subscribers per channel
    for k in range(subscribers):
        listening[k % channels] += 1
    expected = sum(listening[i % channels] for i in range(total))
    for k in range(subscribers):
        client = socketio.AsyncClient(reconnection=False)

        @client.on("chat.message")
        async def on_message(envelope: dict[str, object]) -> None:
            nonlocal received
            received += 1
            latencies.append(time.time() - float(envelope["ts"]))  # type: ignore[arg-type]
            if received == expected:
                everything.set()

        await client.connect(nodes[-1].url, auth={"token": token}, transports=["websocket"])
        await client.call("subscribe", {"channel": names[k % channels]})
        clients.append(client)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=nodes[0].url, headers=headers) as http:
        start = time.monotonic()
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            data = {"i": i, "pad": "x" * 150}
            body = {"channel": names[i % channels], "event": "chat.message", "data": data}
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
        f"nodes={len(nodes)} subscribers={subscribers} channels={channels} rate={rate}/s "
        f"seconds={seconds}: deliveries {received}/{expected}, latency ms p50 {ms(0.5):.1f} "
        f"p99 {ms(0.99):.1f} max {ms(1.0):.1f} mean {statistics.fmean(latencies) * 1000:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=2)
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=1, help="publications round-robin")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="two nodes on a private Redis Cluster (3 primaries + 3 replicas) instead of Redis",
    )
    args = parser.parse_args()
    if args.redis_cluster and args.nodes != 2:
        parser.error("--redis-cluster runs two nodes (--nodes 2)")
    with local_nodes(args.nodes, redis_cluster=args.redis_cluster) as nodes:
        asyncio.run(measure(nodes, args.subscribers, args.rate, args.seconds, args.channels))


if __name__ == "__main__":
    main()
