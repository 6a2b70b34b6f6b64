"""Webhook endpoints in the database: registering, listing, changing and removing them.

Removing an endpoint removes every delivery to it in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from domain.errors import NotFound
from domain.webhooks import WebhookEndpoint
from storage.database import Database
from storage.tables import WebhookEndpointRow, WebhookOutboxRow
from storage.webhook_rows import endpoint_of


class SqlWebhookEndpoints:
    def __init__(self, db: Database) -> None:
        self._db = db

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
            return endpoint_of(row)

    async def endpoints(self) -> list[WebhookEndpoint]:
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(WebhookEndpointRow).order_by(
                    WebhookEndpointRow.created_at, WebhookEndpointRow.id
                )
            )
            return [endpoint_of(row) for row in rows]

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
            return endpoint_of(row)

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
