"""What several nodes share in the tests: one Redis prefix and one migrated PostgreSQL database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tests.support.databases import postgres_database
from tests.support.live import server_env
from tests.support.redis import broker_url, delete_prefix, unique_prefix


@contextmanager
def shared_stores(tmp: Path, *, redis: str | None = None) -> Iterator[dict[str, str]]:
    """The environment of nodes sharing a fresh Redis prefix (on ``redis``, default the shared
    one) and a throwaway, migrated PostgreSQL database; both are cleaned up after."""
    prefix = unique_prefix()
    try:
        with postgres_database() as database:
            env = {
                "TANDEM_BROKER_URL": broker_url(prefix, base=redis),
                "TANDEM_DATABASE_URL": database,
            }
            migrate = [sys.executable, "-m", "server", "migrate"]
            subprocess.run(migrate, env=server_env(tmp, env), check=True, timeout=60)
            yield env
    finally:
        # A thread of its own: callable from sync tests, async ones and under Playwright.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, delete_prefix(prefix, redis)).result()
