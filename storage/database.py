"""The database: engine, sessions, transactions that map outages to retryable errors."""

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
from storage.serial import SerialLock

# What a database that is down or restarting raises: the driver's socket errors surface
# unwrapped when a new connection cannot even be opened.
_UNAVAILABLE = (OperationalError, InterfaceError, OSError, TimeoutError)
# SQLSTATE classes that mean "not now" rather than "wrong": connection exceptions (08),
# insufficient resources (53) and operator intervention (57: shutting down, starting up).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57")


def _transient(exc: DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(state, str) and state[:2] in _TRANSIENT_SQLSTATE_CLASSES


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, **kwargs: Any
) -> AsyncEngine:
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
            # In WAL mode NORMAL never corrupts the database; it fsyncs at checkpoints instead
            # of at every commit (a power cut may lose the last commits, a crash does not).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: two transactions never both read a row and then
            # collide on writing it ("database is locked"); the second one waits instead.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow, **kwargs
    )


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class DatabaseUnavailable(Unavailable):
    pass


class Database:
    """One database for a node. Use ``async with db.transaction() as session:``.

    SQLite takes one writer at a time and makes the others poll with sleeps; on SQLite the
    transactions of this process queue on an asyncio lock instead, which is far faster under
    concurrent writes (the embedded default is a single node, so the lock is the whole story).
    """

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.sessions = sessionmaker(self.engine)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._serial = SerialLock() if url.startswith("sqlite") else None
        # Urgent work (the outbox relay, whose short passes deliver everybody's committed
        # changes) must not queue behind request handlers: on SQLite it goes first on the
        # lock; on PostgreSQL it has connections of its own (one for the relay's advisory
        # lock, one for its transactions) instead of waiting for a pooled one.
        self.urgent_engine = (
            create_engine(url, pool_size=2, max_overflow=0) if self._serial is None else self.engine
        )
        self._urgent_sessions = sessionmaker(self.urgent_engine)

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """One unit of work; a database that cannot be reached becomes a retryable error."""
        sessions = self._urgent_sessions if urgent else self.sessions
        if self._serial is None:
            async with _mapped_outage(sessions) as session:
                yield session
            return
        async with self._serial.hold(urgent=urgent), _mapped_outage(sessions) as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self.urgent_engine.dispose()


@asynccontextmanager
async def _mapped_outage(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    try:
        async with sessions() as session, session.begin():
            yield session
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, _UNAVAILABLE) or _transient(exc):
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
