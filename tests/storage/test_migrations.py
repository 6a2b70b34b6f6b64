"""Migrations run forward and back on both databases, and readiness sees the schema."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from storage.database import create_engine, ping
from storage.migrate import alembic_config, downgrade, upgrade
from storage.tables import Base
from tests.support.live import server_env


async def version(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return None if result is None else str(result)
    finally:
        await engine.dispose()


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migrations must have a single head, found {heads}"
    return str(heads[0])


async def test_upgrade_downgrade_round_trip(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    assert await version(empty_database_url) == head()
    engine = create_engine(empty_database_url)
    try:
        await ping(engine)
    finally:
        await engine.dispose()
    await asyncio.to_thread(downgrade, empty_database_url, "base")
    assert await version(empty_database_url) is None
    await asyncio.to_thread(upgrade, empty_database_url)
    assert await version(empty_database_url) == head()


async def test_readiness_fails_without_a_schema(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the driver's own "no such table" error
            await ping(engine)
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_nodes_starting_together_on_a_fresh_database_take_turns(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Four `tandem migrate` at once (what nodes starting together do): all succeed, and the
    database ends at head (before the lock, one died with a UNIQUE constraint failure on
    alembic_version)."""
    env = server_env(tmp_path, {"TANDEM_DATABASE_URL": empty_database_url})
    command = [sys.executable, "-m", "server", "migrate"]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(120):
        outputs = [await process.communicate() for process in processes]
    for process, (output, _) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output.decode(errors="replace")[-2000:]
    assert await version(empty_database_url) == head()
