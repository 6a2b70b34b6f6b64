"""Sends outgoing webhooks: claims due deliveries, POSTs them signed, records the outcome.

It runs beside the outbox relay, never in it: a receiver that is slow or down costs this
worker's slots, not socket delivery. Each node runs one; a claim leases rows in the database
so each delivery is attempted by one node at a time. At most ``concurrency`` requests are in
flight per node and roughly ``per_endpoint`` per endpoint, so one endpoint that hangs holds
only its own slots and every other endpoint goes on. Only a 2xx counts as delivered:
anything else (an error status, a redirect, something that is not HTTP, no answer within
``timeout_s``) is a failed attempt, recorded with its reason and retried after a backoff,
until ``max_attempts`` makes the delivery dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import httpx

from domain.graceful import finish_or_cancel
from domain.webhooks import Claimed, RetryPolicy
from server.metrics import Metrics
from server.webhooks.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from storage.webhooks import SqlWebhookRepository

log = logging.getLogger(__name__)

USER_AGENT = "Tandem-Webhooks/0.1"
# How much of a failed answer's body is kept in ``last_error``.
_ERROR_BODY = 200


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    concurrency: int = 16
    per_endpoint: int = 4
    poll_interval_s: float = 1.0
    grace_s: float = 5.0

    @property
    def lease(self) -> timedelta:
        # Longer than any attempt can take: a lease that ends means its worker died.
        return timedelta(seconds=2 * self.timeout_s + 5)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    error: str | None  # None: delivered


class WebhookSender:
    """Use as ``async with sender:``; ``wake()`` after a commit that staged deliveries."""

    def __init__(
        self, repository: SqlWebhookRepository, options: WebhookOptions, metrics: Metrics
    ) -> None:
        self._repository = repository
        self._options = options
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_endpoint: dict[str, int] = {}
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            timeout=self._options.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self._options.concurrency),
            trust_env=False,
        )
        self._task = asyncio.create_task(self._run(), name="webhook-sender")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        # The claim loop stops first (a claim under way finishes); attempts under way get the
        # grace period, and one cut short is claimed again (by any node) when its lease ends.
        if task is not None:
            await finish_or_cancel([task], self._options.grace_s)
        await finish_or_cancel(list(self._inflight), self._options.grace_s)
        if self._client is not None:
            await self._client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def send_once(self) -> int:
        """Claim what is due and start sending it; return how many were started."""
        free = self._options.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        busy = [e for e, n in self._per_endpoint.items() if n >= self._options.per_endpoint]
        claimed = await self._repository.claim(
            limit=free,
            per_endpoint=self._options.per_endpoint,
            lease=self._options.lease,
            busy=busy,
        )
        for delivery in claimed:
            self._start(delivery)
        return len(claimed)

    def _start(self, delivery: Claimed) -> None:
        self._per_endpoint[delivery.endpoint_id] = (
            self._per_endpoint.get(delivery.endpoint_id, 0) + 1
        )
        task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
        self._inflight.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.discard(task)
            left = self._per_endpoint.get(delivery.endpoint_id, 1) - 1
            if left > 0:
                self._per_endpoint[delivery.endpoint_id] = left
            else:
                self._per_endpoint.pop(delivery.endpoint_id, None)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _deliver(self, delivery: Claimed) -> None:
        started = time.monotonic()
        outcome = await self.attempt(delivery)
        self._metrics.webhook_attempts.inc()
        self._metrics.webhook_request_seconds.observe(time.monotonic() - started)
        attempts = delivery.attempts + 1
        try:
            if outcome.error is None:
                await self._repository.delivered(delivery.id, outcome.status or 0)
                self._metrics.webhook_deliveries.labels("delivered").inc()
                waited = (datetime.now(UTC) - delivery.created_at).total_seconds()
                self._metrics.webhook_latency.observe(max(0.0, waited))
                return
            retry = self._options.retry
            dead = attempts >= retry.max_attempts
            retry_in = None if dead else retry.delay(attempts)
            await self._repository.failed(
                delivery.id, status=outcome.status, error=outcome.error, retry_in=retry_in
            )
        except Exception as exc:
            # Not recorded: the lease runs out and the delivery is attempted again.
            log.warning("could not record webhook delivery %s: %s", delivery.id, exc)
            return
        if dead:
            self._metrics.webhook_deliveries.labels("dead").inc()
            log.warning(
                "webhook delivery %s to %s dead after %d attempts: %s",
                delivery.id,
                delivery.url,
                attempts,
                outcome.error,
            )
        else:
            self._metrics.webhook_deliveries.labels("failed").inc()
            if retry_in is not None and retry_in < self._options.poll_interval_s:
                # Due before the next poll: look again then rather than a poll later.
                asyncio.get_running_loop().call_later(retry_in, self._wake.set)
            log.info(
                "webhook delivery %s failed (attempt %d, %s); retrying in %.1fs",
                delivery.id,
                attempts,
                outcome.error,
                retry_in,
            )

    async def attempt(self, delivery: Claimed) -> Outcome:
        """One signed POST; never raises for anything the receiver does."""
        assert self._client is not None, "use `async with sender:`"
        timestamp = int(time.time())
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "Webhook-Id": delivery.id,
            "X-Tandem-Event": delivery.event,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(delivery.secret.encode(), timestamp, body),
        }
        try:
            # The whole exchange, however slowly the receiver trickles bytes.
            async with asyncio.timeout(self._options.timeout_s):
                request = self._client.build_request(
                    "POST", delivery.url, content=body, headers=headers
                )
                response = await self._client.send(request, stream=True)
                try:
                    return await _judge(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(None, f"no answer within {self._options.timeout_s:g}s")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            self._wake.clear()
            try:
                await self.send_once()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook sender failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.poll_interval_s):
                    await self._wake.wait()


async def _judge(response: httpx.Response) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(status, None)
    if 300 <= status < 400:
        where = response.headers.get("location", "")[:200]
        return Outcome(status, f"HTTP {status}: redirects are not followed (to {where!r})")
    return Outcome(status, f"HTTP {status}: {await _start_of(response)!r}")


async def _start_of(response: httpx.Response) -> str:
    chunks = bytearray()
    async for chunk in response.aiter_raw():
        chunks.extend(chunk)
        if len(chunks) >= _ERROR_BODY:
            break
    return bytes(chunks[:_ERROR_BODY]).decode("utf-8", "replace")
