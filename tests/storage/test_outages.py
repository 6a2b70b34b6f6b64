"""Which database errors are outages (503, retryable) and which are bugs (500)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from storage.database import _transient


class DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("57P03", True),  # the database system is starting up
        ("57P01", True),  # terminating connection due to administrator command
        ("08006", True),  # connection failure
        ("53300", True),  # too many connections
        ("23505", False),  # unique violation: a bug or a conflict, not an outage
        ("42P01", False),  # undefined table
        (None, False),
    ],
)
def test_transient_sqlstates(sqlstate: str | None, transient: bool) -> None:
    error = DBAPIError("SELECT 1", {}, DriverError(sqlstate))
    assert _transient(error) is transient
