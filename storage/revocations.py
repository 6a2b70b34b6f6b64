"""SqlRevocationRepository: per user, the time before which their tokens are refused."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.tables import Base, TokenRevocationRow

_REVOCATIONS = Base.metadata.tables[TokenRevocationRow.__tablename__]
_C = _REVOCATIONS.c


class SqlRevocationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def revoke(self, user: str, before: datetime, *, now: datetime) -> datetime:
        """Refuse ``user``'s tokens issued before ``before``; a revocation is never narrowed
        (an earlier time than the one stored changes nothing). Returns the time in force."""
        current = await self._locked(user)
        if current is None:
            try:
                async with self._session.begin_nested():
                    await self._session.execute(
                        insert(_REVOCATIONS).values(
                            user_id=user, revoked_before=before, updated_at=now
                        )
                    )
                return before
            except IntegrityError:  # revoked concurrently: the row is there now
                current = await self._locked(user)
                assert current is not None
        if before <= current:
            return current
        await self._session.execute(
            update(_REVOCATIONS)
            .where(_C.user_id == user)
            .values(revoked_before=before, updated_at=now)
        )
        return before

    async def all(self) -> dict[str, datetime]:
        rows = await self._session.execute(select(_C.user_id, _C.revoked_before))
        return {user: _aware(before) for user, before in rows}

    async def _locked(self, user: str) -> datetime | None:
        statement = select(_C.revoked_before).where(_C.user_id == user).with_for_update()
        value = (await self._session.execute(statement)).scalar_one_or_none()
        return None if value is None else _aware(value)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
