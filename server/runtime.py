"""Everything one node runs, built from Settings and entered in the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.flights import FlightService
from domain.jobs import JobService
from domain.notifications import NotificationService
from domain.webhooks import DeliveryStatus
from realtime.broker import (
    Broker,
)
from realtime.channels import Namespaces
from realtime.collab.engine import CollabEngine
from realtime.control import ControlPlane
from realtime.hub import Hub
from realtime.occupancy import OccupancyTracker
from realtime.periodic import Periodic
from realtime.presence import PresenceStore
from realtime.presence_status import StatusBoard
from realtime.presence_tracker import PresenceTracker
from realtime.presence_typing import TypingTracker
from server.admin.stats import NodeStats
from server.auth.api_keys import KeyRing
from server.auth.authz import Authorizer
from server.auth.revocations import Revocations
from server.auth.tokens import TokenVerifier
from server.config import Settings
from server.metrics import Metrics
from server.socket.gateway import SocketGateway
from server.socket.receipts import DeliveryReceipts
from server.transport.sockets import SocketServer
from server.webhooks.feed import ChannelEventFeed
from server.webhooks.sender import WebhookSender
from storage.database import Database, ping
from storage.documents import SqlDocumentStore
from storage.jobs import SqlJobRepository
from storage.notifications import SqlNotificationRepository
from storage.outbox import OutboxRelay
from storage.webhooks import SqlWebhookRepository

log = logging.getLogger(__name__)

# Readiness reports the outbox as stuck when its oldest event has waited longer than this.
OUTBOX_STUCK_S = 30.0


@dataclass(eq=False)
class Runtime:
    settings: Settings
    namespaces: Namespaces
    metrics: Metrics
    sio: SocketServer
    broker: Broker
    hub: Hub
    presence_store: PresenceStore
    presence: PresenceTracker
    gateway: SocketGateway
    db: Database
    verifier: TokenVerifier
    keys: KeyRing
    relay: OutboxRelay
    jobs: JobService
    notifications: NotificationService
    flights: FlightService
    receipts: DeliveryReceipts
    authorizer: Authorizer
    node_id: str
    statuses: StatusBoard
    typing: TypingTracker
    documents: SqlDocumentStore
    collab: CollabEngine
    webhooks: SqlWebhookRepository
    webhook_sender: WebhookSender
    webhook_feed: ChannelEventFeed
    occupancy: OccupancyTracker
    control: ControlPlane
    revocations: Revocations
    stats: NodeStats

    async def readiness(self) -> dict[str, str]:
        """Each dependency's status: "ok", or what is wrong with it (1 s per check)."""
        checks = {"broker": self.broker.ping(), "database": ping(self.db.engine)}
        report: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, 1.0)
                report[name] = "ok"
            except Exception as exc:
                report[name] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
        if self.gateway.draining:
            report["node"] = "draining"
        return report

    async def outbox(self) -> dict[str, Any]:
        """What waits in the outbox: a stuck one (the oldest event waiting longer than
        ``OUTBOX_STUCK_S``) is reported, but does not make the node unready: every node shares
        it, and taking them all out would stop everything else too."""
        stats = await self.relay.stats()
        self.metrics.outbox_snapshot(stats.pending, stats.oldest_s, stats.dead)
        stuck = stats.oldest_s > OUTBOX_STUCK_S
        return {
            "status": "stuck" if stuck else "ok",
            "pending": stats.pending,
            "oldest_s": round(stats.oldest_s, 1),
            "dead_letters": stats.dead,
        }

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.db.dispose)
            await stack.enter_async_context(self.broker)
            await stack.enter_async_context(self.revocations)
            # Exits before the broker: the others hear that this node leaves.
            await stack.enter_async_context(self.control)
            await stack.enter_async_context(self.stats)
            await stack.enter_async_context(self.presence_store)
            await stack.enter_async_context(self.statuses)
            # Exits before the broker: this node's presence leaves are still published.
            await stack.enter_async_context(self.presence)
            await stack.enter_async_context(self.typing)
            await stack.enter_async_context(self.relay)
            # Beside the relay, never in it: a slow receiver must not hold up the broker.
            await stack.enter_async_context(self.webhook_sender)
            await stack.enter_async_context(self.webhook_feed)
            # Exits before the feed: this node's last vacancies are still staged.
            await stack.enter_async_context(self.occupancy)
            # Exits before the database: every open document is flushed and reconciled.
            await stack.enter_async_context(self.collab)
            # Closes before the relay and the database: pending receipts are written.
            stack.push_async_callback(self.receipts.close)
            for purge in (
                self._purge_finished_jobs,
                self._purge_read_notifications,
                self._purge_webhook_deliveries,
            ):
                name = purge.__name__.lstrip("_")
                await stack.enter_async_context(Periodic(purge, 600.0, name=name, immediately=True))
            # On the way out (last in, first out): the sessions still ending finish first,
            # while all they use still runs; then the heartbeat stops.
            stack.push_async_callback(self.sio.engine.shutdown)
            yield self

    async def _purge_finished_jobs(self) -> None:
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.job_retention_s)
        async with self.db.transaction() as session:
            purged = await SqlJobRepository(session).purge_finished(horizon)
        if purged:
            log.info("purged %d finished jobs", purged)

    async def _purge_webhook_deliveries(self) -> None:
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.webhook_retention_s)
        purged = await self.webhooks.purge(horizon)
        if purged:
            log.info("purged %d webhook deliveries", purged)

    async def webhook_counts(self) -> None:
        """Carry the webhook outbox's pending and dead counts over to the metrics."""
        counts = await self.webhooks.counts()
        self.metrics.webhooks_snapshot(counts[DeliveryStatus.PENDING], counts[DeliveryStatus.DEAD])

    async def _purge_read_notifications(self) -> None:
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.notification_retention_s)
        async with self.db.transaction() as session:
            purged = await SqlNotificationRepository(session).purge_read(horizon)
        if purged:
            log.info("purged %d read notifications", purged)
