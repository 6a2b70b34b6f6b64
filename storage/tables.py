"""ORM tables. Rows never leave this package: repositories convert them to domain objects."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
