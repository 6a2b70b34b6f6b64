"""Where the shared Redis or PostgreSQL is not running, start private ones from local binaries.

The tests of storage and the broker must run (never skip): on this project's machines the
services run already; elsewhere the same `make test` still works when `redis-server` and the
PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.services import PrivatePostgres, PrivateRedis

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return True
    except OSError:
        return False


def ensure_services(stack: ExitStack) -> list[str]:
    """Point TANDEM_TEST_* at running services, starting private ones where needed."""
    started = []
    redis_url = os.environ.setdefault("TANDEM_TEST_REDIS_URL", DEFAULT_REDIS)
    if not reachable(redis_url):
        workdir = Path(tempfile.mkdtemp(prefix="tandem-redis-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        redis = PrivateRedis(workdir=workdir)
        redis.start()
        stack.callback(redis.stop)
        os.environ["TANDEM_TEST_REDIS_URL"] = redis.url
        started.append(f"redis on {redis.port}")
    postgres_url = os.environ.setdefault("TANDEM_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    if not reachable(postgres_url):
        postgres = PrivatePostgres()
        stack.callback(shutil.rmtree, postgres.workdir, ignore_errors=True)
        postgres.init()
        postgres.start()
        stack.callback(postgres.stop)
        os.environ["TANDEM_TEST_POSTGRES_URL"] = (
            f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
        )
        started.append(f"postgresql on {postgres.port}")
    return started
