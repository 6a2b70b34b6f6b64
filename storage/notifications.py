"""SqlNotificationRepository: the per-user inbox; rows never leave this module."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict
from domain.notifications import Notification, NotificationType, PagePosition
from storage.tables import Base, NotificationRow

_INBOX = Base.metadata.tables[NotificationRow.__tablename__]
_C = _INBOX.c


class SqlNotificationRepository:
    """Core statements, like SqlJobRepository: a few rows written once, read by index."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, notifications: Sequence[Notification], key: str | None) -> None:
        if not notifications:
            return
        rows = [{**_columns(n), "idempotency_key": key} for n in notifications]
        try:
            await self._session.execute(insert(_INBOX), rows)
        except IntegrityError:
            raise Conflict("these notifications were already created") from None

    async def by_key(self, key: str) -> list[Notification]:
        rows = await self._session.execute(
            select(_INBOX).where(_C.idempotency_key == key).order_by(_C.user)
        )
        return [_to_notification(row) for row in rows]

    async def page(
        self, user: str, *, unread_only: bool, after: PagePosition | None, limit: int
    ) -> list[Notification]:
        statement = select(_INBOX).where(_C.user == user)
        if unread_only:
            statement = statement.where(_C.read_at.is_(None))
        if after is not None:
            statement = statement.where(
                or_(
                    _C.created_at < after.created_at,
                    and_(_C.created_at == after.created_at, _C.id < after.id),
                )
            )
        statement = statement.order_by(_C.created_at.desc(), _C.id.desc()).limit(limit)
        return [_to_notification(row) for row in await self._session.execute(statement)]

    async def unread_counts(self, users: Sequence[str]) -> dict[str, int]:
        rows = await self._session.execute(
            select(_C.user, func.count())
            .where(_C.user.in_(list(users)), _C.read_at.is_(None))
            .group_by(_C.user)
        )
        counts = {user: 0 for user in users}
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    async def existing(self, user: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        found = await self._session.scalars(
            select(_C.id).where(_C.user == user, _C.id.in_(list(ids)))
        )
        return set(found)

    async def mark_read(self, user: str, ids: Sequence[str] | None, now: datetime) -> list[str]:
        """Set ``read_at`` on those still unread; the ids that changed."""
        unread = select(_C.id).where(_C.user == user, _C.read_at.is_(None))
        if ids is not None:
            if not ids:
                return []
            unread = unread.where(_C.id.in_(list(ids)))
        changed = list(await self._session.scalars(unread.order_by(_C.created_at, _C.id)))
        if changed:
            await self._session.execute(
                update(_INBOX)
                .where(_C.user == user, _C.id.in_(changed), _C.read_at.is_(None))
                .values(read_at=now)
            )
        return changed

    async def delete(self, user: str, notification_id: str) -> bool:
        result = await self._session.execute(
            delete(_INBOX).where(_C.user == user, _C.id == notification_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge_read(self, before: datetime) -> int:
        """Delete notifications read before ``before``. Unread ones stay however old: the
        inbox promises everything unread is there on connect."""
        result = await self._session.execute(
            delete(_INBOX).where(_C.read_at.is_not(None), _C.read_at < before)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def mark_delivered(self, ids: Sequence[str], now: datetime) -> int:
        if not ids:
            return 0
        result = await self._session.execute(
            update(_INBOX)
            .where(_C.id.in_(list(ids)), _C.delivered_at.is_(None))
            .values(delivered_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _columns(n: Notification) -> dict[str, object]:
    return {
        "id": n.id,
        "user": n.user,
        "type": n.type.value,
        "title": n.title,
        "body": n.body,
        "link": n.link,
        "data": n.data,
        "created_at": n.created_at,
        "read_at": n.read_at,
        "delivered_at": n.delivered_at,
    }


def _to_notification(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        user=row.user,
        type=NotificationType(row.type),
        title=row.title,
        body=row.body,
        link=row.link,
        data=row.data,
        created_at=_aware(row.created_at),
        read_at=None if row.read_at is None else _aware(row.read_at),
        delivered_at=None if row.delivered_at is None else _aware(row.delivered_at),
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
