"""This node's numbers for the admin console, published on ``admin:stats`` every interval.

A snapshot carries the node's gauges and counters (from server/metrics.py), the publish and
delivery rates since the previous snapshot, and two bounded rings: the clients most recently
disconnected as slow, and the most recent errors (requests answered with an error, and
anything logged at ERROR). Consoles subscribed to ``admin:stats`` see every node's snapshots
without polling; ``GET /api/admin/stats`` gathers the current ones.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from types import TracebackType
from typing import Any, Self

from prometheus_client import Counter, Gauge

from domain.errors import ErrorCode
from realtime.broker import Broker, BrokerUnavailable
from realtime.periodic import Periodic
from server.metrics import Metrics
from server.socket.gateway import SocketGateway

STATS_CHANNEL = "admin:stats"
STATS_EVENT = "admin.stats"
RING_SIZE = 50
_TEXT_MAX = 300


class NodeStats:
    def __init__(
        self,
        *,
        node_id: str,
        metrics: Metrics,
        gateway: SocketGateway,
        broker: Broker,
        interval_s: float,
    ) -> None:
        self._node_id = node_id
        self._metrics = metrics
        self._gateway = gateway
        self._broker = broker
        self._interval_s = interval_s
        self._started_at = time.time()
        self.errors: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
        self.slow: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)
        self._last = (time.monotonic(), 0.0, 0.0)
        self._rates = (0.0, 0.0)
        self._publisher = Periodic(self.publish, interval_s, name="admin-stats")
        self._log_handler = _ErrorLog(self)
        gateway.requests.on_error = self.request_error
        gateway.on_kick = self.kicked

    def request_error(self, code: str, message: str) -> None:
        self._record(self.errors, source="request", code=code, message=message)

    def kicked(self, sid: str, user: str, code: ErrorCode, message: str) -> None:
        if code is ErrorCode.SLOW:
            self._record(self.slow, connection=sid, user=user, message=message)

    def logged(self, record: logging.LogRecord) -> None:
        self._record(self.errors, source=record.name, code="internal", message=record.getMessage())

    def _record(self, ring: deque[dict[str, Any]], **fields: str) -> None:
        ring.append({"ts": time.time(), **{k: v[:_TEXT_MAX] for k, v in fields.items()}})

    def snapshot(self) -> dict[str, Any]:
        metrics = self._metrics
        publish_rate, delivery_rate = self._rates
        return {
            "node": self._node_id,
            "ts": time.time(),
            "started_at": self._started_at,
            "connections": len(self._gateway.local_connections()),
            "channels": self._gateway.channel_count(),
            "subscriptions": int(_total(metrics.subscriptions, suffix="")),
            "publications": int(_total(metrics.publications)),
            "deliveries": int(_total(metrics.deliveries)),
            "publish_rate": round(publish_rate, 2),
            "delivery_rate": round(delivery_rate, 2),
            "slow_total": int(_total(metrics.disconnects, label=ErrorCode.SLOW.value)),
            "errors_total": int(_total(metrics.request_errors)),
            "slow": list(self.slow)[-10:],
            "errors": list(self.errors)[-20:],
        }

    def _advance_rates(self) -> None:
        now = time.monotonic()
        published, delivered = _total(self._metrics.publications), _total(self._metrics.deliveries)
        then, published_then, delivered_then = self._last
        elapsed = max(now - then, 1e-3)
        self._rates = (
            (published - published_then) / elapsed,
            (delivered - delivered_then) / elapsed,
        )
        self._last = (now, published, delivered)

    async def publish(self) -> None:
        self._advance_rates()
        with contextlib.suppress(BrokerUnavailable):  # the next round tries again
            await self._broker.publish(STATS_CHANNEL, STATS_EVENT, self.snapshot())

    async def __aenter__(self) -> Self:
        self._last = (
            time.monotonic(),
            _total(self._metrics.publications),
            _total(self._metrics.deliveries),
        )
        logging.getLogger().addHandler(self._log_handler)
        self._publisher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._publisher.stop()
        logging.getLogger().removeHandler(self._log_handler)


class _ErrorLog(logging.Handler):
    """Copies ERROR records into the node's ring of recent errors."""

    def __init__(self, stats: NodeStats) -> None:
        super().__init__(logging.ERROR)
        self._stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._stats.logged(record)
        except Exception:  # a log handler must never raise into the code that logs
            self.handleError(record)


def _total(metric: Counter | Gauge, *, label: str | None = None, suffix: str = "_total") -> float:
    """A counter's (or, with ``suffix=""``, a gauge's) value summed over its labels, or of
    the samples with one label value."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name == family.name + suffix
        and (label is None or label in sample.labels.values())
    )
