"""The async engine and a readiness probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from domain.errors import Unavailable

# What a database that is down or restarting raises: the driver's socket errors surface
# unwrapped when a new connection cannot even be opened.
_UNAVAILABLE = (OperationalError, InterfaceError, OSError, TimeoutError)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine that survives database restarts (pre-ping) and suits SQLite's locking."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 15}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling begins lazily (on the first write), too
            # late to serialize read-modify-write; transactions are begun below instead.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # WAL lets readers proceed while the single writer commits.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: two transactions never both read a row and then
            # collide on writing it ("database is locked"); the second one waits instead.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


class DatabaseUnavailable(Unavailable):
    pass


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work; a database that cannot be reached becomes a retryable error."""
    try:
        async with sessions() as session, session.begin():
            yield session
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, _UNAVAILABLE):
            raise DatabaseUnavailable("the database is unavailable; retry") from exc
        raise
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable("the database is unavailable; retry") from exc


async def ping(engine: AsyncEngine) -> None:
    """Succeed only when the database answers and has been migrated."""
    async with engine.connect() as connection:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    if version is None:
        raise RuntimeError("the database has no schema; run `tandem migrate`")
