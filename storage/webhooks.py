"""Outgoing webhooks in the database: endpoints, and the outbox of deliveries to them.

Deliveries for domain events are staged (``stage``) in the transaction of the change that
caused them, so a committed change always has its deliveries. Workers on any node ``claim``
due deliveries with a lease: a conditional UPDATE that only one of them wins per row, so each
delivery is attempted by one node at a time, and one whose worker died is claimed again when
its lease runs out. A claim takes at most a few rows per endpoint, so one endpoint's backlog
never crowds out the others.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict, NotFound
from domain.webhooks import (
    Claimed,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from storage.database import Database
from storage.tables import WebhookEndpointRow, WebhookOutboxRow

_PENDING = DeliveryStatus.PENDING.value
_DEAD = DeliveryStatus.DEAD.value
_DELIVERED = DeliveryStatus.DELIVERED.value


def new_id() -> str:
    return uuid.uuid4().hex


async def stage(session: AsyncSession, events: Sequence[WebhookEvent]) -> int:
    """Write a delivery of each event to each enabled endpoint that wants it, in ``session``'s
    transaction; return how many. Reads the endpoints only when there is an event."""
    if not events:
        return 0
    endpoints = [
        _endpoint(row)
        for row in await session.scalars(
            select(WebhookEndpointRow).where(WebhookEndpointRow.enabled.is_(True))
        )
    ]
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for event in events:
        wanted = [endpoint for endpoint in endpoints if endpoint.wants(event)]
        if not wanted:
            continue
        body = json.dumps(event.body(), separators=(",", ":"), default=str)
        rows.extend(
            {
                "id": new_id(),
                "endpoint_id": endpoint.id,
                "event_id": event.id,
                "event": event.type,
                "body": body,
                "status": _PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint in wanted
        )
    if rows:
        await session.execute(insert(WebhookOutboxRow), rows)
    return len(rows)


class SqlWebhookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- endpoints --------------------------------------------------------------------------

    async def create(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        async with self._db.transaction() as session:
            session.add(
                WebhookEndpointRow(
                    id=endpoint.id,
                    url=endpoint.url,
                    events=list(endpoint.events),
                    description=endpoint.description,
                    secret=endpoint.secret,
                    enabled=endpoint.enabled,
                    created_at=endpoint.created_at,
                    updated_at=endpoint.updated_at,
                )
            )
        return endpoint

    async def get(self, endpoint_id: str) -> WebhookEndpoint:
        async with self._db.transaction() as session:
            row = await session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise NotFound(f"no webhook endpoint {endpoint_id!r}")
            return _endpoint(row)

    async def endpoints(self) -> list[WebhookEndpoint]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(WebhookEndpointRow).order_by(
                    WebhookEndpointRow.created_at, WebhookEndpointRow.id
                )
            )
            return [_endpoint(row) for row in rows]

    async def update(self, endpoint_id: str, **changes: Any) -> WebhookEndpoint:
        """Change ``url``, ``events``, ``description`` or ``enabled``."""
        async with self._db.transaction() as session:
            row = await session.get(WebhookEndpointRow, endpoint_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no webhook endpoint {endpoint_id!r}")
            for name, value in changes.items():
                setattr(row, name, list(value) if name == "events" else value)
            row.updated_at = datetime.now(UTC)
            await session.flush()
            return _endpoint(row)

    async def delete(self, endpoint_id: str) -> None:
        """Forget the endpoint and every delivery to it."""
        async with self._db.transaction() as session:
            await session.execute(
                delete(WebhookOutboxRow).where(WebhookOutboxRow.endpoint_id == endpoint_id)
            )
            deleted = await session.execute(
                delete(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id)
            )
        if not getattr(deleted, "rowcount", 0):
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")

    # -- deliveries -------------------------------------------------------------------------

    async def stage(self, events: Sequence[WebhookEvent]) -> int:
        """Stage in a transaction of its own (events that are not part of a database change)."""
        async with self._db.transaction() as session:
            return await stage(session, events)

    async def delivery(self, delivery_id: str) -> WebhookDelivery:
        async with self._db.transaction() as session:
            row = await session.get(WebhookOutboxRow, delivery_id)
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id!r}")
            return _delivery(row)

    async def deliveries(
        self,
        endpoint_id: str,
        status: DeliveryStatus | None = None,
        limit: int = 100,
        *,
        before: str | None = None,
    ) -> list[WebhookDelivery]:
        """An endpoint's deliveries, newest first; ``before``: those older than that one."""
        query = select(WebhookOutboxRow).where(WebhookOutboxRow.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(WebhookOutboxRow.status == status.value)
        async with self._db.transaction() as session:
            if await session.get(WebhookEndpointRow, endpoint_id) is None:
                raise NotFound(f"no webhook endpoint {endpoint_id!r}")
            if before is not None:
                cursor = await session.get(WebhookOutboxRow, before)
                if cursor is None or cursor.endpoint_id != endpoint_id:
                    raise NotFound(f"no delivery {before!r} to endpoint {endpoint_id!r}")
                query = query.where(
                    or_(
                        WebhookOutboxRow.created_at < cursor.created_at,
                        and_(
                            WebhookOutboxRow.created_at == cursor.created_at,
                            WebhookOutboxRow.id < cursor.id,
                        ),
                    )
                )
            query = query.order_by(
                WebhookOutboxRow.created_at.desc(), WebhookOutboxRow.id.desc()
            ).limit(limit)
            return [_delivery(row) for row in await session.scalars(query)]

    async def claim(
        self,
        *,
        limit: int,
        per_endpoint: int,
        lease: timedelta,
        busy: Iterable[str] = (),
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries of enabled endpoints (at most ``per_endpoint``
        each, none of the ``busy`` ones); other claimers skip them until the lease ends."""
        if limit <= 0:
            return []
        now = datetime.now(UTC)
        due = and_(
            WebhookOutboxRow.status == _PENDING,
            WebhookOutboxRow.next_attempt_at <= now,
            _unlocked(now),
        )
        rank = (
            func.row_number()
            .over(
                partition_by=WebhookOutboxRow.endpoint_id,
                order_by=(WebhookOutboxRow.next_attempt_at, WebhookOutboxRow.id),
            )
            .label("rank")
        )
        candidates = (
            select(WebhookOutboxRow.id, WebhookOutboxRow.next_attempt_at, rank)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookOutboxRow.endpoint_id)
            .where(due, WebhookEndpointRow.enabled.is_(True))
        )
        busy = list(busy)
        if busy:
            candidates = candidates.where(WebhookOutboxRow.endpoint_id.not_in(busy))
        ranked = candidates.subquery()
        pick = (
            select(ranked.c.id)
            .where(ranked.c.rank <= per_endpoint)
            .order_by(ranked.c.next_attempt_at, ranked.c.id)
            .limit(limit)
        )
        async with self._db.transaction() as session:
            ids = list(await session.scalars(pick))
            if not ids:
                return []
            # The same condition again: of two nodes that picked a row, one UPDATE wins.
            won = list(
                await session.scalars(
                    update(WebhookOutboxRow)
                    .where(WebhookOutboxRow.id.in_(ids), due)
                    .values(locked_until=now + lease)
                    .returning(WebhookOutboxRow.id)
                )
            )
            if not won:
                return []
            rows = await session.execute(
                select(WebhookOutboxRow, WebhookEndpointRow.url, WebhookEndpointRow.secret)
                .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookOutboxRow.endpoint_id)
                .where(WebhookOutboxRow.id.in_(won))
                .order_by(WebhookOutboxRow.next_attempt_at, WebhookOutboxRow.id)
            )
            return [
                Claimed(
                    id=row.id,
                    endpoint_id=row.endpoint_id,
                    url=url,
                    secret=secret,
                    event=row.event,
                    body=row.body,
                    attempts=row.attempts,
                    created_at=_aware(row.created_at),
                )
                for row, url, secret in rows
            ]

    async def delivered(self, delivery_id: str, status: int) -> None:
        now = datetime.now(UTC)
        async with self._db.transaction(urgent=True) as session:
            await session.execute(
                update(WebhookOutboxRow)
                .where(WebhookOutboxRow.id == delivery_id)
                .values(
                    status=_DELIVERED,
                    attempts=WebhookOutboxRow.attempts + 1,
                    last_status=status,
                    last_error=None,
                    delivered_at=now,
                    next_attempt_at=None,
                    locked_until=None,
                )
            )

    async def failed(
        self, delivery_id: str, *, status: int | None, error: str, retry_in: float | None
    ) -> None:
        """Record a failed attempt: due again in ``retry_in`` seconds, or dead (None)."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "attempts": WebhookOutboxRow.attempts + 1,
            "last_status": status,
            "last_error": error[:500],
            "locked_until": None,
        }
        if retry_in is None:
            values.update(status=_DEAD, next_attempt_at=None)
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        async with self._db.transaction(urgent=True) as session:
            await session.execute(
                update(WebhookOutboxRow).where(WebhookOutboxRow.id == delivery_id).values(values)
            )

    async def replay(self, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, with its attempts starting over (any status but one in
        flight: a delivered one is sent once more, with the same id)."""
        async with self._db.transaction() as session:
            row = await session.get(WebhookOutboxRow, delivery_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id!r}")
            locked = _maybe_aware(row.locked_until)
            if row.status == _PENDING and locked is not None and locked > datetime.now(UTC):
                raise Conflict(f"delivery {delivery_id} is being sent right now; try again later")
            _make_pending(row)
            await session.flush()
            return _delivery(row)

    async def replay_dead(self, endpoint_id: str) -> int:
        """Make every dead delivery of the endpoint pending again; return how many."""
        async with self._db.transaction() as session:
            if await session.get(WebhookEndpointRow, endpoint_id) is None:
                raise NotFound(f"no webhook endpoint {endpoint_id!r}")
            result = await session.execute(
                update(WebhookOutboxRow)
                .where(
                    WebhookOutboxRow.endpoint_id == endpoint_id,
                    WebhookOutboxRow.status == _DEAD,
                )
                .values(
                    status=_PENDING,
                    attempts=0,
                    next_attempt_at=datetime.now(UTC),
                    locked_until=None,
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def counts(self) -> dict[DeliveryStatus, int]:
        """How many deliveries are pending and dead (delivered ones are not counted)."""
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(WebhookOutboxRow.status, func.count())
                .where(WebhookOutboxRow.status.in_((_PENDING, _DEAD)))
                .group_by(WebhookOutboxRow.status)
            )
            found = {DeliveryStatus(status): int(count) for status, count in rows}
        return {
            status: found.get(status, 0) for status in (DeliveryStatus.PENDING, DeliveryStatus.DEAD)
        }

    async def purge(self, horizon: datetime) -> int:
        """Forget deliveries that were delivered, or died, before ``horizon``."""
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(WebhookOutboxRow).where(
                    or_(
                        and_(
                            WebhookOutboxRow.status == _DELIVERED,
                            WebhookOutboxRow.delivered_at < horizon,
                        ),
                        and_(
                            WebhookOutboxRow.status == _DEAD,
                            WebhookOutboxRow.created_at < horizon,
                        ),
                    )
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _unlocked(now: datetime) -> ColumnElement[bool]:
    return or_(WebhookOutboxRow.locked_until.is_(None), WebhookOutboxRow.locked_until < now)


def _make_pending(row: WebhookOutboxRow) -> None:
    row.status = _PENDING
    row.attempts = 0
    row.next_attempt_at = datetime.now(UTC)
    row.locked_until = None
    row.delivered_at = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _maybe_aware(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _endpoint(row: WebhookEndpointRow) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        url=row.url,
        events=tuple(row.events),
        description=row.description,
        enabled=row.enabled,
        secret=row.secret,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _delivery(row: WebhookOutboxRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event=row.event,
        body=row.body,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=_maybe_aware(row.next_attempt_at),
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=_aware(row.created_at),
        delivered_at=_maybe_aware(row.delivered_at),
    )
