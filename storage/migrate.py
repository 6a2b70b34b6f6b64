"""Alembic, driven from code: the migrations ship inside the package."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``. Synchronous: call it outside the event loop.

    Several processes may call it at once (nodes starting together): they take turns, and
    the later ones find the database at ``revision`` already.
    """
    with _sqlite_lock(database_url):
        command.upgrade(alembic_config(database_url), revision)


@contextmanager
def _sqlite_lock(database_url: str) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database (PostgreSQL: an advisory lock,
    taken in migrations/env.py)."""
    url = make_url(database_url)
    path = url.database
    if not url.drivername.startswith("sqlite") or not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
