"""Each node's broker and presence store, for the presence tests, all sharing one backend."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from realtime.broker import Broker, BrokerOptions, create_broker
from realtime.presence import PresenceOptions, PresenceStore, create_presence_store
from tests.realtime.test_broker_contract import Received, wait_ready
from tests.support.redis import broker_url, redis_prefix


@dataclass
class Backend:
    broker: Broker
    store: PresenceStore
    received: Received


async def node_backends(
    stack: AsyncExitStack, kind: str, n: int, *, channels: Sequence[str], ttl: float
) -> list[Backend]:
    """``n`` nodes on memory (one node) or a private Redis prefix, subscribed to ``channels``;
    everything is closed with ``stack``."""
    url = "memory://"
    if kind == "redis":
        url = broker_url(await stack.enter_async_context(redis_prefix()))
    backends = []
    for i in range(n):
        received = Received()
        broker = create_broker(url, BrokerOptions(node_id=f"n{i}"), received)
        await stack.enter_async_context(broker)
        await wait_ready(broker)
        for channel in channels:
            await broker.subscribe(channel)
        store = create_presence_store(url, PresenceOptions(ttl=ttl))
        await stack.enter_async_context(store)
        backends.append(Backend(broker, store, received))
    return backends
