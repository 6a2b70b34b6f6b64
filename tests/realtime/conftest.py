from __future__ import annotations

from pathlib import Path

import pytest

from storage.migrate import upgrade


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database to copy: migrating each test's own would cost more."""
    path = tmp_path_factory.mktemp("template") / "tandem.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path
