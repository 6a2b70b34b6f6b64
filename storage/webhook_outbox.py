"""The outbox of webhook deliveries: staging them with the change that caused them, and
reading, replaying, counting and purging them.

Deliveries for domain events are staged (``stage``) in the transaction of the change that
caused them, so a committed change always has its deliveries. Sending them is the workers'
(``webhook_leases``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict, NotFound
from domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookEvent
from storage.database import Database
from storage.tables import WebhookEndpointRow, WebhookOutboxRow
from storage.webhook_rows import (
    DEAD,
    DELIVERED,
    PENDING,
    delivery_of,
    endpoint_of,
    maybe_aware,
    new_id,
)


async def stage(session: AsyncSession, events: Sequence[WebhookEvent]) -> int:
    """Write a delivery of each event to each enabled endpoint that wants it, in ``session``'s
    transaction; return how many. Reads the endpoints only when there is an event."""
    if not events:
        return 0
    endpoints = [
        endpoint_of(row)
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
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint in wanted
        )
    if rows:
        await session.execute(insert(WebhookOutboxRow), rows)
    return len(rows)


class SqlWebhookOutbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def stage(self, events: Sequence[WebhookEvent]) -> int:
        """Stage in a transaction of its own (events that are not part of a database change)."""
        async with self._db.transaction() as session:
            return await stage(session, events)

    async def delivery(self, delivery_id: str) -> WebhookDelivery:
        async with self._db.transaction() as session:
            row = await session.get(WebhookOutboxRow, delivery_id)
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id!r}")
            return delivery_of(row)

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
            return [delivery_of(row) for row in await session.scalars(query)]

    async def replay(self, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, with its attempts starting over (any status but one in
        flight: a delivered one is sent once more, with the same id)."""
        async with self._db.transaction() as session:
            row = await session.get(WebhookOutboxRow, delivery_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id!r}")
            locked = maybe_aware(row.locked_until)
            if row.status == PENDING and locked is not None and locked > datetime.now(UTC):
                raise Conflict(f"delivery {delivery_id} is being sent right now; try again later")
            _make_pending(row)
            await session.flush()
            return delivery_of(row)

    async def replay_dead(self, endpoint_id: str) -> int:
        """Make every dead delivery of the endpoint pending again; return how many."""
        async with self._db.transaction() as session:
            if await session.get(WebhookEndpointRow, endpoint_id) is None:
                raise NotFound(f"no webhook endpoint {endpoint_id!r}")
            result = await session.execute(
                update(WebhookOutboxRow)
                .where(
                    WebhookOutboxRow.endpoint_id == endpoint_id,
                    WebhookOutboxRow.status == DEAD,
                )
                .values(
                    status=PENDING,
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
                .where(WebhookOutboxRow.status.in_((PENDING, DEAD)))
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
                            WebhookOutboxRow.status == DELIVERED,
                            WebhookOutboxRow.delivered_at < horizon,
                        ),
                        and_(
                            WebhookOutboxRow.status == DEAD,
                            WebhookOutboxRow.created_at < horizon,
                        ),
                    )
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _make_pending(row: WebhookOutboxRow) -> None:
    row.status = PENDING
    row.attempts = 0
    row.next_attempt_at = datetime.now(UTC)
    row.locked_until = None
    row.delivered_at = None
