"""One or two local Tandem nodes for the quick benchmarks: two share the Redis at
TANDEM_TEST_REDIS_URL under a prefix, or a private Redis Cluster (three primaries, three
replicas, started from the local redis-server) with ``redis_cluster=True``."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.live import LiveServer, live_server
from tests.support.redis import broker_url, delete_prefix, unique_prefix
from tests.support.redis_cluster import private_redis_cluster


@contextmanager
def local_nodes(count: int, *, redis_cluster: bool = False) -> Iterator[list[LiveServer]]:
    """``count`` nodes on loopback (SQLite each; Redis between them when there are two),
    stopped and their Redis keys (or the whole private cluster) deleted afterwards."""
    prefix = unique_prefix()
    shared_redis = count > 1 and not redis_cluster
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            env = {}
            if redis_cluster:
                cluster = stack.enter_context(private_redis_cluster())
                env = {"TANDEM_BROKER_URL": cluster.broker_url(prefix)}
            elif shared_redis:
                env = {"TANDEM_BROKER_URL": broker_url(prefix)}
            yield [stack.enter_context(live_server(Path(tmp) / f"n{i}", env)) for i in range(count)]
    finally:
        if shared_redis:
            asyncio.run(delete_prefix(prefix))
