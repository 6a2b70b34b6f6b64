"""One of two nodes SIGKILLed behind the repository's nginx config: its clients reconnect to the
survivor and recover what they missed."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from client_sdk import Client
from tests.faults.invariants import Watch, watch
from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.nginx import nginx
from tests.support.redis import broker_url, redis_prefix


def connections(node: LiveServer) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=2).text
    match = re.search(r"^tandem_connections (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_clients_of_a_killed_node_recover_on_the_other(tmp_path: Path) -> None:
    async with redis_prefix() as prefix:
        env = {"TANDEM_BROKER_URL": broker_url(prefix)}
        with (
            live_server(tmp_path / "a", env) as a,
            live_server(tmp_path / "b", env) as b,
            nginx(tmp_path / "nginx", [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as proxy,
        ):
            token = a.token("alice", channels=["room:f2"])
            sinks = [Watch() for _ in range(5)]
            clients = [
                Client(proxy.url, token=token, reconnect_delay=0.2, reconnect_delay_max=1)
                for _ in sinks
            ]
            accepted: list[int] = []
            failed = 0
            try:
                tasks = []
                for client, sink in zip(clients, sinks, strict=True):
                    await client.connect()
                    ready = asyncio.Event()
                    tasks.append(asyncio.create_task(watch(client, "room:f2", sink, ready)))
                    await asyncio.wait_for(ready.wait(), 5)
                victim, survivor = (a, b) if connections(a) >= connections(b) else (b, a)
                assert connections(victim) == 5, "the hash did not keep the clients together"

                async def publish(n: int) -> None:
                    nonlocal failed
                    headers = {"Authorization": f"Bearer {API_KEY}"}
                    async with httpx.AsyncClient(base_url=proxy.url, headers=headers) as http:
                        for i in range(n):
                            body = {"channel": "room:f2", "event": "chat.message", "data": {"i": i}}
                            # As a worker does: a request that fails (the node died with it in
                            # flight, published or not) is retried with the same key, which the
                            # broker dedupes, so every publication ends up there exactly once.
                            key = {"Idempotency-Key": f"kill-{i}"}
                            for _ in range(50):
                                try:
                                    response = await http.post(
                                        "/api/publish", json=body, headers=key
                                    )
                                    if response.status_code == 200:
                                        accepted.append(i)
                                        break
                                except httpx.HTTPError:
                                    pass
                                failed += 1
                                await asyncio.sleep(0.1)
                            await asyncio.sleep(0.05)

                publisher = asyncio.create_task(publish(120))
                await asyncio.sleep(1.5)
                victim.process.kill()  # SIGKILL: no drain, no goodbye
                killed = time.monotonic()
                await publisher
                async with asyncio.timeout(15):
                    await asyncio.gather(*(sink.until(len(accepted)) for sink in sinks))
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                assert connections(survivor) == 5
            finally:
                for client in clients:
                    await client.close()

    for sink in sinks:
        sink.assert_no_silent_gap()
        assert sink.values() == accepted, "a client missed or repeated a publication"
        assert not sink.resyncs
    stall = max(
        (later - earlier)
        for sink in sinks
        for earlier, later in zip(sink.arrivals, sink.arrivals[1:], strict=False)
        if earlier >= killed - 1
    )
    print(
        f"node kill: {len(accepted)} publications accepted, {failed} attempts failed and were "
        "retried, "
        f"longest delivery gap after the kill {stall:.2f}s, every client recovered"
    )
    assert stall < 10.0
