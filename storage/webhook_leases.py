"""Webhook deliveries leased to the workers that send them, and the outcome they record.

Workers on any node ``claim`` due deliveries with a lease: a conditional UPDATE that only one
of them wins per row, so each delivery is attempted by one node at a time, and one whose
worker died is claimed again when its lease runs out. A claim takes at most a few rows per
endpoint, so one endpoint's backlog never crowds out the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update

from domain.webhooks import Claimed
from storage.database import Database
from storage.tables import WebhookEndpointRow, WebhookOutboxRow
from storage.webhook_rows import DEAD, DELIVERED, PENDING, aware


class SqlWebhookLeases:
    def __init__(self, db: Database) -> None:
        self._db = db

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
            WebhookOutboxRow.status == PENDING,
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
                    created_at=aware(row.created_at),
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
                    status=DELIVERED,
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
            values.update(status=DEAD, next_attempt_at=None)
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        async with self._db.transaction(urgent=True) as session:
            await session.execute(
                update(WebhookOutboxRow).where(WebhookOutboxRow.id == delivery_id).values(values)
            )


def _unlocked(now: datetime) -> ColumnElement[bool]:
    return or_(WebhookOutboxRow.locked_until.is_(None), WebhookOutboxRow.locked_until < now)
