"""Prometheus metrics, on a registry owned by the app (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # CPU, memory and open files of the node (process_*), for the dashboard.
        ProcessCollector(registry=r)
        self.connections = Gauge("tandem_connections", "Connected Socket.IO clients", registry=r)
        self.connects = Counter(
            "tandem_connects", "Connection attempts by result", ["result"], registry=r
        )
        self.disconnects = Counter(
            "tandem_disconnects", "Disconnects by reason", ["reason"], registry=r
        )
        self.subscriptions = Gauge(
            "tandem_subscriptions", "Live channel subscriptions on this node", registry=r
        )
        self.publications = Counter(
            "tandem_publications", "Publications accepted, by source", ["source"], registry=r
        )
        # The labelled children the hot paths count on, looked up once (``labels()`` takes a
        # lock and validates its arguments: 2 % of a socket publish's CPU).
        self.socket_publications = self.publications.labels("socket")
        self.http_publications = self.publications.labels("http")
        self.deliveries = Counter(
            "tandem_deliveries", "Publications written to client connections", registry=r
        )
        self.latency = Histogram(
            "tandem_publish_to_deliver_seconds",
            "Time from publication to hand-off to the connection",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.recoveries = Counter(
            "tandem_recoveries", "Subscribe-with-position outcomes", ["result"], registry=r
        )
        self.subscribe_requests = Counter(
            "tandem_subscribe_requests",
            "subscribe (form=single) and subscribe_many (form=batch) requests admitted",
            ["form"],
            registry=r,
        )
        self.request_errors = Counter(
            "tandem_request_errors",
            "Requests answered with an error, by code",
            ["code"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "tandem_protocol_errors", "Malformed packets received", ["kind"], registry=r
        )
        self.channels = Gauge(
            "tandem_channels", "Channels with local subscribers on this node", registry=r
        )
        self.presence_events = Counter(
            "tandem_presence_events",
            "Presence events published by this node (join, leave, expired)",
            ["type"],
            registry=r,
        )
        self.broker_errors = Counter(
            "tandem_broker_errors", "Broker operations that failed", ["op"], registry=r
        )

        self.doc_deliveries = Counter(
            "tandem_doc_deliveries",
            "Document updates and awareness changes written to members",
            ["event"],
            registry=r,
        )
        self.docs_open = Gauge(
            "tandem_docs_open", "Collaborative documents loaded on this node", registry=r
        )
        self.doc_events = Counter(
            "tandem_doc_events",
            "Document engine counters: updates (from clients), remote_updates (from other nodes, "
            "that integrated), redundant, echoes, invalid, flushed, flush_failures, "
            "compactions, repairs (what the store lacked, appended by a reconcile), loads, "
            "unloads",
            ["kind"],
            registry=r,
        )
        self._doc_counted: dict[str, int] = {}
        self.outbox_pending = Gauge(
            "tandem_outbox_pending", "Outbox events waiting to be published", registry=r
        )
        self.outbox_oldest = Gauge(
            "tandem_outbox_oldest_pending_seconds",
            "How long the oldest waiting outbox event has waited",
            registry=r,
        )
        self.outbox_dead = Gauge(
            "tandem_outbox_dead_letters",
            "Outbox events the broker refused too often, no longer retried",
            registry=r,
        )

        self.webhook_deliveries = Counter(
            "tandem_webhook_deliveries",
            "Outgoing webhook attempts by outcome: delivered, failed (retried later), dead",
            ["outcome"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "tandem_webhook_attempts", "Outgoing webhook requests made by this node", registry=r
        )
        self.webhook_request_seconds = Histogram(
            "tandem_webhook_request_seconds",
            "Duration of one outgoing webhook request, whatever its outcome",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.webhook_latency = Histogram(
            "tandem_webhook_delivery_seconds",
            "Time from an event to its webhook's delivery (retries included)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
            registry=r,
        )
        self.webhook_pending = Gauge(
            "tandem_webhook_pending", "Outgoing webhook deliveries waiting to be sent", registry=r
        )
        self.webhook_dead = Gauge(
            "tandem_webhook_dead_letters",
            "Outgoing webhook deliveries that failed too often, waiting for a replay",
            registry=r,
        )
        self.webhook_events_dropped = Counter(
            "tandem_webhook_events_dropped",
            "Channel events (presence, occupancy) not staged for webhooks: the queue was full "
            "or the database down",
            registry=r,
        )

    def subscriptions_snapshot(self, channel_count: int) -> None:
        self.channels.set(channel_count)

    def outbox_snapshot(self, pending: int, oldest_s: float, dead: int) -> None:
        self.outbox_pending.set(pending)
        self.outbox_oldest.set(oldest_s)
        self.outbox_dead.set(dead)

    def webhooks_snapshot(self, pending: int, dead: int) -> None:
        self.webhook_pending.set(pending)
        self.webhook_dead.set(dead)

    def documents_snapshot(self, open_documents: int, counters: dict[str, int]) -> None:
        """The engine keeps plain counters (no metrics on its hot path); they are carried
        over here whenever the metrics are read."""
        self.docs_open.set(open_documents)
        for kind, value in counters.items():
            counted = self._doc_counted.get(kind, 0)
            if value > counted:
                self.doc_events.labels(kind).inc(value - counted)
                self._doc_counted[kind] = value
