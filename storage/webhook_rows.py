"""Webhook rows as the repository writes and reads them: new ids, the stored status values,
and the conversion of endpoint and delivery rows to domain objects (timestamps made
timezone-aware: SQLite hands them back naive)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from storage.tables import WebhookEndpointRow, WebhookOutboxRow

PENDING = DeliveryStatus.PENDING.value
DEAD = DeliveryStatus.DEAD.value
DELIVERED = DeliveryStatus.DELIVERED.value


def new_id() -> str:
    return uuid.uuid4().hex


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def maybe_aware(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


def endpoint_of(row: WebhookEndpointRow) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        url=row.url,
        events=tuple(row.events),
        description=row.description,
        enabled=row.enabled,
        secret=row.secret,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


def delivery_of(row: WebhookOutboxRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event=row.event,
        body=row.body,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=maybe_aware(row.next_attempt_at),
        last_status=row.last_status,
        last_error=row.last_error,
        created_at=aware(row.created_at),
        delivered_at=maybe_aware(row.delivered_at),
    )
