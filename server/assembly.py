"""Construct every part of a node from its settings, wired together (nothing connects yet)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable
from typing import Any

from domain.clock import SystemClock
from domain.errors import ErrorCode, NotFound
from domain.flights import FlightService
from domain.jobs import JobService
from domain.notifications import NotificationService
from domain.webhooks import RetryPolicy
from realtime.broker import (
    Broker,
    BrokerOptions,
    BrokerUnavailable,
    Publication,
    create_broker,
)
from realtime.channels import Channel, ChannelKind
from realtime.collab.bus import create_doc_bus
from realtime.collab.engine import CollabEngine, CollabOptions
from realtime.control import ControlPlane, is_control
from realtime.hub import Hub
from realtime.occupancy import OccupancyTracker
from realtime.presence import PresenceOptions, create_presence_store
from realtime.presence_status import StatusBoard
from realtime.presence_tracker import PresenceTracker
from realtime.presence_typing import TypingTracker
from server.admin.node import NodeAdmin
from server.admin.stats import NodeStats
from server.auth.api_keys import KeyRing
from server.auth.authz import Authorizer, OwnerLookup
from server.auth.revocations import Revocations
from server.auth.tokens import TokenVerifier
from server.config import DOC_FRAME_OVERHEAD, Settings
from server.events import route_event
from server.metrics import Metrics
from server.namespaces import load_namespaces, socket_payload_limit
from server.runtime import Runtime
from server.socket.channel_state import ChannelState
from server.socket.delivery import SocketDelivery
from server.socket.doc_delivery import DocDelivery
from server.socket.documents import LARGE_EVENTS, DocGateway
from server.socket.gateway import SocketGateway
from server.socket.presence import PresenceEdge
from server.socket.receipts import DeliveryReceipts
from server.transport.compact_json import JsonWire
from server.transport.engine import EngineOptions
from server.transport.packets import JsonCodec, MsgPackCodec
from server.transport.sockets import SocketOptions, SocketServer
from server.webhooks.feed import ChannelEventFeed
from server.webhooks.sender import WebhookOptions, WebhookSender
from storage.database import Database
from storage.documents import SqlDocumentStore
from storage.outbox import OutboxRelay
from storage.unit_of_work import unit_of_work
from storage.webhooks import SqlWebhookRepository


def build_runtime(settings: Settings) -> Runtime:
    """Construct (but do not connect) every part of a node.

    Raises:
        ChannelsFileError: ``TANDEM_CHANNELS_FILE`` is not a valid channels file.
    """
    namespaces = load_namespaces(settings)
    metrics = Metrics()
    node_id = settings.node_id or secrets.token_hex(4)
    options = BrokerOptions(
        history_size=settings.history_size,
        history_ttl=settings.history_ttl_s,
        idempotency_ttl=settings.idempotency_ttl_s,
        node_id=node_id,
        retention=namespaces.retention,
    )
    # Late-bound: the notification service needs the relay, which needs the hub.
    receipts = DeliveryReceipts(lambda ids: notifications.mark_delivered(ids))

    def max_lag(channel: str) -> int:
        # A client cut off as slow loses what waited for it here; to resume from its
        # position, that must be within the channel's history (a tenth kept for what comes
        # meanwhile).
        return options.retention_of(channel).size * 9 // 10

    sio = SocketServer(
        SocketOptions(
            max_payload_bytes=socket_payload_limit(settings, namespaces),
            protocol_error_limit=settings.protocol_error_limit,
            connect_timeout_s=settings.connect_timeout_s,
            large_events=frozenset(LARGE_EVENTS),
            max_large_payload_bytes=settings.doc_max_bytes + DOC_FRAME_OVERHEAD,
        ),
        EngineOptions(
            ping_interval_s=settings.ping_interval_s,
            ping_timeout_s=settings.ping_timeout_s,
            max_payload_bytes=settings.engine_max_bytes,
            cors_origins=tuple(settings.cors_origins),
            client_buffer_bytes=settings.client_buffer_bytes,
            max_lag=max_lag,
        ),
        MsgPackCodec() if settings.serializer == "msgpack" else JsonCodec(JsonWire()),
        count_error=lambda kind: metrics.protocol_errors.labels(kind).inc(),
    )
    hub = Hub(
        SocketDelivery(
            sio,
            metrics,
            latest_value_events=namespaces.latest_value,
            on_delivered=receipts.delivered,
        )
    )
    control = ControlPlane(
        node_id=node_id,
        heartbeat_s=settings.admin_heartbeat_s,
        info=lambda: {
            "connections": len(gateway.local_connections()),
            "channels": hub.channel_count,
        },
    )

    def on_publication(pub: Publication) -> Awaitable[None]:
        # The control plane's reserved channels never reach the hub (no client is on them).
        # Not a coroutine of its own: no extra frame per publication on the fan-out path.
        return (control.on_publication if is_control(pub.channel) else hub.on_publication)(pub)

    broker = create_broker(settings.broker_url, options, on_publication, on_reset=hub.on_reset)
    hub.use(broker)
    control.use(broker)
    db = Database(settings.database_url)
    webhooks = SqlWebhookRepository(db)
    webhook_sender = WebhookSender(webhooks, _webhook_options(settings), metrics)
    webhook_feed = ChannelEventFeed(webhooks, metrics, on_staged=webhook_sender.wake)
    presence_store = create_presence_store(
        settings.broker_url, PresenceOptions(ttl=settings.presence_ttl_s)
    )
    statuses = StatusBoard(presence_store, broker, node_id=node_id, ttl=settings.presence_ttl_s)
    presence = PresenceTracker(
        presence_store,
        broker,
        node_id=node_id,
        ttl=settings.presence_ttl_s,
        on_event=lambda kind: metrics.presence_events.labels(kind).inc(),
        statuses=statuses,
        on_change=webhook_feed.publish,
    )
    typing = TypingTracker(broker, timeout=settings.typing_timeout_s)
    occupancy = OccupancyTracker(
        presence_store, node_id=node_id, ttl=settings.presence_ttl_s, on_change=webhook_feed.publish
    )
    hub.on_occupancy = occupancy.changed

    async def relay_publish(channel: str, event: str, data: object, key: str) -> None:
        await broker.publish(channel, event, data, idempotency_key=key)

    # The broker being down holds every row back; anything else it raises is about the row.
    relay = OutboxRelay(db, relay_publish, transient=(BrokerUnavailable, RuntimeError))

    def committed() -> None:
        relay.wake()
        webhook_sender.wake()

    jobs = JobService(
        unit_of_work(db, route_event, committed), SystemClock(), lambda: uuid.uuid4().hex
    )
    notifications = NotificationService(
        unit_of_work(db, route_event, committed), SystemClock(), lambda: uuid.uuid4().hex
    )
    flights = FlightService(unit_of_work(db, route_event, committed), SystemClock())
    revocations = Revocations(db, refresh_s=settings.revocation_refresh_s)
    verifier = TokenVerifier(settings, revoked=revocations.revoked)
    documents = SqlDocumentStore(db)
    collab = CollabEngine(
        documents,
        lambda on_message, on_reconnect: create_doc_bus(
            settings.broker_url, node_id, on_message, on_reconnect
        ),
        DocDelivery(sio, metrics),
        CollabOptions(
            node_id=node_id,
            max_doc_bytes=settings.doc_max_bytes,
            flush_interval=settings.doc_flush_interval_s,
            unload_grace=settings.doc_unload_grace_s,
            reconcile_interval=settings.doc_reconcile_interval_s,
            anti_entropy_interval=settings.doc_anti_entropy_interval_s,
            awareness_ttl=settings.presence_ttl_s,
        ),
    )
    gateway = SocketGateway(
        sio=sio,
        settings=settings,
        namespaces=namespaces,
        broker=broker,
        hub=hub,
        presence=presence,
        presence_edge=PresenceEdge(
            hub=hub,
            tracker=presence,
            statuses=statuses,
            typing=typing,
            grace=settings.presence_grace_s,
            namespaces=namespaces,
        ),
        authorizer=Authorizer({ChannelKind.JOB: _owner_of(jobs)}, documents=documents.get),
        state=_channel_state(broker, jobs, notifications, flights),
        verifier=verifier,
        metrics=metrics,
    )
    gateway.register()
    stats = NodeStats(
        node_id=node_id,
        metrics=metrics,
        gateway=gateway,
        broker=broker,
        interval_s=settings.admin_stats_interval_s,
    )
    admin = NodeAdmin(node_id=node_id, gateway=gateway, revocations=revocations, stats=stats)
    admin.register(control)
    DocGateway(engine=collab, store=documents, settings=settings).register(sio, gateway)

    async def kick_slow(eio_sid: str) -> None:
        sid = sio.sid_of(eio_sid)
        if sid is None:
            sio.close_transport(eio_sid)
            return
        await gateway.kick(
            sid,
            ErrorCode.SLOW,
            "the connection fell too far behind; reconnect and resume from your position",
            reconnect=True,
        )

    sio.on_slow = kick_slow
    return Runtime(
        settings=settings,
        namespaces=namespaces,
        metrics=metrics,
        sio=sio,
        broker=broker,
        hub=hub,
        presence_store=presence_store,
        presence=presence,
        gateway=gateway,
        db=db,
        verifier=verifier,
        keys=KeyRing(settings, db),
        relay=relay,
        jobs=jobs,
        notifications=notifications,
        flights=flights,
        receipts=receipts,
        authorizer=gateway.authorizer,
        node_id=node_id,
        statuses=statuses,
        typing=typing,
        documents=documents,
        collab=collab,
        webhooks=webhooks,
        webhook_sender=webhook_sender,
        webhook_feed=webhook_feed,
        occupancy=occupancy,
        control=control,
        revocations=revocations,
        stats=stats,
    )


def _webhook_options(settings: Settings) -> WebhookOptions:
    return WebhookOptions(
        retry=RetryPolicy(
            base_s=settings.webhook_backoff_base_s,
            max_s=settings.webhook_backoff_max_s,
            max_attempts=settings.webhook_max_attempts,
        ),
        timeout_s=settings.webhook_timeout_s,
        concurrency=settings.webhook_concurrency,
        per_endpoint=settings.webhook_per_endpoint,
        poll_interval_s=settings.webhook_poll_interval_s,
    )


def _owner_of(jobs: JobService) -> OwnerLookup:
    async def lookup(channel: Channel) -> str | None:
        try:
            return (await jobs.get(channel.id)).owner
        except NotFound:
            return None

    return lookup


def _channel_state(
    broker: Broker, jobs: JobService, notifications: NotificationService, flights: FlightService
) -> ChannelState:
    state = ChannelState(broker)

    async def job_snapshot(channel: Channel) -> Any:
        try:
            return (await jobs.get(channel.id)).snapshot()
        except NotFound:
            return None

    async def inbox(channel: Channel) -> Any:
        # The unread count and the newest notifications: an offline week is not lost.
        return await notifications.inbox(channel.id)

    async def flight_snapshot(channel: Channel) -> Any:
        try:
            return (await flights.get(channel.id)).snapshot()
        except NotFound:
            # No stored flight: a cache channel, as before flights were a service.
            return await state.latest(channel)

    # The built-in namespaces whose subscribers get a state (by name: not configurable).
    state.register(ChannelKind.JOB, job_snapshot)
    state.register(ChannelKind.FLIGHT, flight_snapshot)
    state.register(ChannelKind.USER, inbox)
    return state
