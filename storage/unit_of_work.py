"""One transaction for a domain service: repositories plus the outbox for its events.

The events are staged twice in that transaction: as publications for the broker, and as
deliveries to the webhook endpoints that want them (storage/webhooks.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from domain.events import DomainEvent
from domain.webhooks import DOMAIN_EVENT_TYPES, WebhookEvent
from storage.database import Database
from storage.flights import SqlFlightRepository
from storage.jobs import SqlJobRepository
from storage.notifications import SqlNotificationRepository
from storage.outbox import OutboxMessage, stage
from storage.webhooks import new_id, stage as stage_webhooks

# Turns a domain event into the publications it causes (the server knows channel names).
Route = Callable[[DomainEvent], Iterable[OutboxMessage]]


class _OutboxSink:
    """Collects events; they are written in one statement just before the commit."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self.messages: list[OutboxMessage] = []
        self.hooks: list[WebhookEvent] = []

    def emit(self, event: DomainEvent) -> None:
        self.messages.extend(self._route(event))
        if event.type in DOMAIN_EVENT_TYPES:
            self.hooks.append(WebhookEvent(new_id(), event.type, event.data, datetime.now(UTC)))


class SqlUnitOfWork:
    def __init__(self, session: AsyncSession, route: Route) -> None:
        self.jobs = SqlJobRepository(session)
        self.flights = SqlFlightRepository(session)
        self.notifications = SqlNotificationRepository(session)
        self.events = _OutboxSink(route)


def unit_of_work(
    db: Database, route: Route, on_commit: Callable[[], None]
) -> Callable[[], AbstractAsyncContextManager[SqlUnitOfWork]]:
    """A factory of units of work; ``on_commit`` runs after each commit (wakes the relay and
    the webhook workers)."""

    @asynccontextmanager
    async def begin() -> AsyncIterator[SqlUnitOfWork]:
        async with db.transaction() as session:
            work = SqlUnitOfWork(session, route)
            yield work
            await stage(session, work.events.messages)
            await stage_webhooks(session, work.events.hooks)
        on_commit()

    return begin
