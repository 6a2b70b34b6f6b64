"""Notifications: a persisted inbox per user, pushed live on ``user:<id>``.

A notification is created unread; reading it sets ``read_at`` once, and the first delivery to
any of the user's connections sets ``delivered_at`` once. Subscribing to ``user:<id>`` returns
the unread count and the newest notifications, so nothing depends on history retention.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from domain.clock import Clock
from domain.errors import Conflict, InvalidPayload, NotFound
from domain.events import DomainEvent, EventSink

MAX_TITLE = 200
MAX_BODY = 2000
MAX_LINK = 2000
MAX_KEY = 200
MAX_PAGE = 100
LATEST = 20


class NotificationType(StrEnum):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    ACTION = "action"


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    user: str
    type: NotificationType
    title: str
    body: str
    link: str | None
    data: Any
    created_at: datetime
    read_at: datetime | None = None
    delivered_at: datetime | None = None

    @classmethod
    def create(
        cls,
        notification_id: str,
        *,
        user: str,
        type: str,
        title: str,
        body: str = "",
        link: str | None = None,
        data: Any = None,
        now: datetime,
    ) -> Notification:
        try:
            kind = NotificationType(type)
        except ValueError:
            known = ", ".join(t.value for t in NotificationType)
            raise InvalidPayload(f"type must be one of {known}") from None
        if not 1 <= len(title) <= MAX_TITLE:
            raise InvalidPayload(f"title must be 1 to {MAX_TITLE} characters")
        if len(body) > MAX_BODY:
            raise InvalidPayload(f"body must be at most {MAX_BODY} characters")
        if link is not None and not 1 <= len(link) <= MAX_LINK:
            raise InvalidPayload(f"link must be 1 to {MAX_LINK} characters")
        if not user:
            raise InvalidPayload("user must not be empty")
        return cls(
            id=notification_id,
            user=user,
            type=kind,
            title=title,
            body=body,
            link=link,
            data=data,
            created_at=now,
        )

    @property
    def unread(self) -> bool:
        return self.read_at is None

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape every client sees, over the socket and over HTTP."""
        return {
            "id": self.id,
            "user": self.user,
            "type": self.type.value,
            "title": self.title,
            "body": self.body,
            "link": self.link,
            "data": self.data,
            "created_at": self.created_at.isoformat(),
            "read_at": None if self.read_at is None else self.read_at.isoformat(),
            "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PagePosition:
    """Where a page ended: the (created_at, id) of its last notification."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps(
            [self.created_at.astimezone(UTC).isoformat(), self.id], separators=(",", ":")
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> PagePosition:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            created_at, ident = json.loads(raw)
            position = cls(datetime.fromisoformat(created_at), str(ident))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise InvalidPayload("cursor is not one this server returned") from None
        if position.created_at.tzinfo is None:
            raise InvalidPayload("cursor is not one this server returned")
        return position


@dataclass(frozen=True, slots=True)
class NotificationPage:
    notifications: list[Notification]
    next_cursor: str | None
    unread: int


def created_event(notification: Notification, unread: int) -> DomainEvent:
    return DomainEvent(
        type="notification.created",
        data={**notification.snapshot(), "unread": unread},
        topics=(("user", notification.user),),
    )


def read_event(user: str, ids: Sequence[str], unread: int) -> DomainEvent:
    return DomainEvent(
        type="notification.read",
        data={"ids": list(ids), "unread": unread},
        topics=(("user", user),),
    )


class NotificationRepository(Protocol):
    """Notifications as stored. ``add`` raises Conflict when the idempotency key was taken."""

    async def add(self, notifications: Sequence[Notification], key: str | None) -> None: ...

    async def by_key(self, key: str) -> list[Notification]: ...

    async def page(
        self, user: str, *, unread_only: bool, after: PagePosition | None, limit: int
    ) -> list[Notification]: ...

    async def unread_counts(self, users: Sequence[str]) -> dict[str, int]: ...

    async def existing(self, user: str, ids: Sequence[str]) -> set[str]: ...

    async def mark_read(self, user: str, ids: Sequence[str] | None, now: datetime) -> list[str]: ...

    async def delete(self, user: str, notification_id: str) -> bool: ...

    async def mark_delivered(self, ids: Sequence[str], now: datetime) -> int: ...


class NotificationUnitOfWork(Protocol):
    @property
    def notifications(self) -> NotificationRepository: ...

    @property
    def events(self) -> EventSink: ...


UnitOfWork = Callable[[], AbstractAsyncContextManager[NotificationUnitOfWork]]


class NotificationService:
    def __init__(self, unit_of_work: UnitOfWork, clock: Clock, new_id: Callable[[], str]) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._new_id = new_id

    async def create(
        self,
        users: str | Sequence[str],
        *,
        type: str,
        title: str,
        body: str = "",
        link: str | None = None,
        data: Any = None,
        idempotency_key: str | None = None,
    ) -> list[Notification]:
        """One notification per user, committed with its events. A repeated
        ``idempotency_key`` returns the notifications it first created and adds nothing."""
        recipients = [users] if isinstance(users, str) else list(dict.fromkeys(users))
        if not recipients:
            raise InvalidPayload("give at least one user")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_KEY:
            raise InvalidPayload(f"the idempotency key must be 1 to {MAX_KEY} characters")
        now = self._clock.now()
        created = [
            Notification.create(
                self._new_id(),
                user=user,
                type=type,
                title=title,
                body=body,
                link=link,
                data=data,
                now=now,
            )
            for user in recipients
        ]
        if idempotency_key is not None:
            earlier = await self._by_key(idempotency_key, recipients)
            if earlier:
                return earlier
        try:
            async with self._uow() as uow:
                await uow.notifications.add(created, idempotency_key)
                counts = await uow.notifications.unread_counts(recipients)
                for notification in created:
                    uow.events.emit(created_event(notification, counts.get(notification.user, 0)))
        except Conflict:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key won the race: answer with its result.
            earlier = await self._by_key(idempotency_key, recipients)
            if not earlier:
                raise
            return earlier
        return created

    async def latest(self, user: str, n: int = LATEST) -> list[Notification]:
        async with self._uow() as uow:
            return await uow.notifications.page(user, unread_only=False, after=None, limit=n)

    async def unread_count(self, user: str) -> int:
        async with self._uow() as uow:
            return (await uow.notifications.unread_counts([user])).get(user, 0)

    async def inbox(self, user: str, n: int = LATEST) -> dict[str, Any]:
        """What a subscriber to ``user:<id>`` gets as state: the unread count and the newest."""
        async with self._uow() as uow:
            latest = await uow.notifications.page(user, unread_only=False, after=None, limit=n)
            unread = (await uow.notifications.unread_counts([user])).get(user, 0)
        return {"unread": unread, "latest": [n.snapshot() for n in latest]}

    async def mark_read(self, user: str, ids: Sequence[str] | None = None) -> int:
        """Mark ``ids`` (or, with None, all) of the user's notifications read; the new unread
        count. Unknown ids (or other users') raise NotFound and change nothing."""
        wanted = None if ids is None else list(dict.fromkeys(ids))
        async with self._uow() as uow:
            if wanted is not None:
                missing = set(wanted) - await uow.notifications.existing(user, wanted)
                if missing:
                    raise NotFound(f"no notification {sorted(missing)[0]!r}")
            changed = await uow.notifications.mark_read(user, wanted, self._clock.now())
            unread = (await uow.notifications.unread_counts([user])).get(user, 0)
            if changed:
                uow.events.emit(read_event(user, changed, unread))
        return unread

    async def delete(self, user: str, notification_id: str) -> None:
        async with self._uow() as uow:
            if not await uow.notifications.delete(user, notification_id):
                raise NotFound(f"no notification {notification_id!r}")

    async def mark_delivered(self, ids: Sequence[str]) -> int:
        """Record the first delivery time of each; later deliveries change nothing."""
        if not ids:
            return 0
        async with self._uow() as uow:
            return await uow.notifications.mark_delivered(list(ids), self._clock.now())

    async def _by_key(self, key: str, recipients: Sequence[str]) -> list[Notification]:
        """What ``key`` first created, in this request's order of users."""
        async with self._uow() as uow:
            earlier = await uow.notifications.by_key(key)
        order = {user: i for i, user in enumerate(recipients)}
        return sorted(earlier, key=lambda n: order.get(n.user, len(order)))

    async def list(
        self,
        user: str,
        *,
        unread_only: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> NotificationPage:
        """Newest first; ``next_cursor`` fetches the following page (None on the last)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidPayload(f"limit must be between 1 and {MAX_PAGE}")
        after = None if not cursor else PagePosition.decode(cursor)
        async with self._uow() as uow:
            rows = await uow.notifications.page(
                user, unread_only=unread_only, after=after, limit=limit + 1
            )
            unread = (await uow.notifications.unread_counts([user])).get(user, 0)
        page, more = rows[:limit], len(rows) > limit
        next_cursor = PagePosition(page[-1].created_at, page[-1].id).encode() if more else None
        return NotificationPage(page, next_cursor, unread)
