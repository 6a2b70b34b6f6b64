"""Throwaway databases: a SQLite file, or a private database on the shared PostgreSQL.

PostgreSQL is required, never skipped: CI must fail when it cannot run these tests.
Override the admin connection with ``TANDEM_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg


def admin_url() -> str:
    """The PostgreSQL the tests use (tests/support/fallback.py may have started a private one)."""
    return os.environ.get("TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(statement: str) -> None:
    # Its own thread and loop, so it works from sync and async tests alike.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin_async(statement)).result()


async def _admin_async(statement: str) -> None:
    try:
        connection = await asyncpg.connect(admin_url(), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is required for these tests and is not reachable at {admin_url()}: {exc}"
        ) from exc
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create ``tandem_test_<random>``; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"tandem_test_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    base = admin_url().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
