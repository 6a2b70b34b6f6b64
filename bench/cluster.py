"""One or two local Tandem nodes for the quick benchmarks (two share Redis under a prefix)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.live import LiveServer, live_server
from tests.support.redis import broker_url, delete_prefix, unique_prefix


@contextmanager
def local_nodes(count: int) -> Iterator[list[LiveServer]]:
    """``count`` nodes on loopback (SQLite each; Redis between them when there are two),
    stopped and their Redis keys deleted afterwards."""
    prefix = unique_prefix()
    env = {"TANDEM_BROKER_URL": broker_url(prefix)} if count > 1 else {}
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            yield [stack.enter_context(live_server(Path(tmp) / f"n{i}", env)) for i in range(count)]
    finally:
        if count > 1:
            asyncio.run(delete_prefix(prefix))
