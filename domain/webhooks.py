"""Outgoing webhooks: endpoints that subscribe to event types, and deliveries to them.

An endpoint subscribes to event types (``job.completed``), and for the channel events
(presence, occupancy) optionally to one channel namespace only (``presence.join:room``).
Each event that matches an endpoint becomes one delivery: its id is the ``Webhook-Id`` a
receiver dedupes on, since a delivery is sent at least once. A failed attempt is retried after
an exponential backoff with full jitter; after ``max_attempts`` the delivery is dead, until a
replay makes it pending again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidPayload

# Domain events, committed with the change that caused them.
DOMAIN_EVENT_TYPES = ("job.completed", "job.failed", "notification.created", "flight.updated")
# Channel events: who is on a channel, and whether anyone is; they take a ``:<namespace>``.
CHANNEL_EVENT_TYPES = ("presence.join", "presence.leave", "channel.occupied", "channel.vacated")
EVENT_TYPES = DOMAIN_EVENT_TYPES + CHANNEL_EVENT_TYPES
MAX_URL = 2000
MAX_EVENTS = 32
MAX_DESCRIPTION = 500
MIN_SECRET, MAX_SECRET = 16, 128


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    url: str
    events: tuple[str, ...]
    description: str
    enabled: bool
    secret: str
    created_at: datetime
    updated_at: datetime

    def wants(self, event: WebhookEvent) -> bool:
        return wants(self.events, event)

    def snapshot(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event as receivers see it; ``namespace`` is the channel kind of a channel event."""

    id: str
    type: str
    data: dict[str, Any]
    created_at: datetime
    namespace: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at.isoformat(),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    id: str
    endpoint_id: str
    event_id: str
    event: str
    body: str  # the exact JSON bytes sent (and signed) on every attempt
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body)
        return body

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "event": self.event,
            "status": self.status.value,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "delivered_at": _iso(self.delivered_at),
        }


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to one worker, with what it takes to send it."""

    id: str
    endpoint_id: str
    url: str
    secret: str
    event: str
    body: str
    attempts: int  # before this one
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    max_s: float = 600.0
    max_attempts: int = 15

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(attempt-1))] after attempt ``attempt``."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        return float(ceiling * rand())


def wants(subscriptions: Iterable[str], event: WebhookEvent) -> bool:
    for subscription in subscriptions:
        kind, _, namespace = subscription.partition(":")
        if kind == event.type and (not namespace or namespace == event.namespace):
            return True
    return False


def check_events(events: Iterable[str], namespaces: Iterable[str]) -> tuple[str, ...]:
    """Subscriptions as given, without duplicates, or InvalidPayload naming the known ones."""
    known_namespaces = sorted(namespaces)
    checked: list[str] = []
    for subscription in events:
        kind, colon, namespace = subscription.partition(":")
        if kind not in EVENT_TYPES:
            raise InvalidPayload(
                f"events: unknown event type {kind!r}; known types: {', '.join(EVENT_TYPES)}"
            )
        if colon and kind not in CHANNEL_EVENT_TYPES:
            raise InvalidPayload(
                f"events: {kind} takes no ':<namespace>'; only {', '.join(CHANNEL_EVENT_TYPES)} do"
            )
        if colon and namespace not in known_namespaces:
            raise InvalidPayload(
                f"events: unknown namespace {namespace!r} in {subscription!r}; "
                f"known namespaces: {', '.join(known_namespaces)}"
            )
        if subscription not in checked:
            checked.append(subscription)
    if not checked:
        raise InvalidPayload(f"events: list at least one of {', '.join(EVENT_TYPES)}")
    if len(checked) > MAX_EVENTS:
        raise InvalidPayload(f"events: at most {MAX_EVENTS} subscriptions")
    return tuple(checked)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no credentials, or InvalidPayload."""
    if len(url) > MAX_URL:
        raise InvalidPayload(f"url: at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise InvalidPayload(f"url: not a valid URL ({exc})") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise InvalidPayload("url: must be an absolute http:// or https:// URL")
    if not parts.hostname:
        raise InvalidPayload("url: must name a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidPayload("url: must not carry credentials (user:password@); sign instead")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidPayload("url: must not contain whitespace or control characters")
    return url


def check_secret(secret: str) -> str:
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isprintable():
        raise InvalidPayload(
            f"secret: {MIN_SECRET} to {MAX_SECRET} printable characters (or leave it out and "
            "one is generated)"
        )
    return secret


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
