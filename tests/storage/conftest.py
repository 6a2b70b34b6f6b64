"""Every storage test runs on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from server.events import route_event
from storage.database import Database
from storage.migrate import upgrade
from storage.unit_of_work import SqlUnitOfWork, unit_of_work
from tests.support.databases import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tandem.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A migrated database."""
    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def units(db: Database) -> Callable[[], AbstractAsyncContextManager[SqlUnitOfWork]]:
    """Units of work routing events to channels as the server does."""
    return unit_of_work(db, route_event, on_commit=lambda: None)
