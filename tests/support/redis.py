"""A private key prefix on the shared Redis, cleaned afterwards. Never skipped when missing."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import asyncio as aioredis


def redis_url() -> str:
    """The Redis the tests use (tests/support/fallback.py may have started a private one)."""
    return os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_prefix() -> str:
    return f"tandem-test-{secrets.token_hex(4)}:"


def broker_url(prefix: str, *, sharded: bool = False, base: str | None = None) -> str:
    return f"{base or redis_url()}?prefix={prefix}" + ("&sharded=1" if sharded else "")


async def delete_prefix(prefix: str, base: str | None = None) -> None:
    client = aioredis.from_url(base or redis_url())
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        await delete_prefix(prefix)
