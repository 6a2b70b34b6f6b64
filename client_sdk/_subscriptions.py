"""A client's subscriptions, kept subscribed from one connection to the next.

A `Subscription` is (re)subscribed by a worker task of its own: the first subscribe, a gap to
repair, a retry. After a reconnect they all go back at once in ``subscribe_many`` requests of
at most `MAX_BATCH` channels, each with its position: one request per hundred channels rather
than one each, within the server's subscription budget (a fresh connection may restore all it
can hold). A server that does not know ``subscribe_many`` gets one ``subscribe`` each.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from client_sdk._connection import Connection
from client_sdk._errors import (
    ConnectionLost,
    InvalidPayload,
    RateLimited,
    RequestTimeout,
    TandemError,
    checked_ack,
    error_class,
)
from client_sdk._models import Message
from client_sdk._subscription import Subscription, is_transient

if TYPE_CHECKING:
    from client_sdk._client import Client

log = logging.getLogger("client_sdk")

MAX_BATCH = 100  # the most channels the server takes in one subscribe_many
BATCH_EVENT = "subscribe_many"


class _Outcome(enum.Enum):
    APPLIED = "applied"
    RETRY = "retry"  # try again after a backoff
    DROPPED = "dropped"  # failed for good


class SubscriptionSet:
    """The subscriptions of one `Client`, by channel (the owner of each `Subscription`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._subs: dict[str, Subscription] = {}
        self._workers: dict[Subscription, asyncio.Task[None]] = {}
        # Subscriptions whose re-subscribe is in a subscribe_many on its way: a gap or an
        # overflow meanwhile waits for its answer instead of starting a worker.
        self._batched: set[Subscription] = set()
        self._restore: asyncio.Task[None] | None = None

    def get(self, channel: str) -> Subscription | None:
        return self._subs.get(channel)

    def deliver(self, msg: Message) -> None:
        sub = self._subs.get(msg.channel)
        if sub is not None:
            sub._on_message(msg)

    # -- what a Subscription asks of its owner ------------------------------------------------

    async def _start_subscription(self, sub: Subscription) -> None:
        client = self._client
        client._check_usable()
        if sub.channel in self._subs:
            raise ValueError(f"already subscribed to {sub.channel!r} on this client")
        self._subs[sub.channel] = sub
        ready = sub._begin()
        self._schedule_sync(sub)
        try:
            async with asyncio.timeout(client._request_timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            ready.cancel()
            await self._stop_subscription(sub)
            raise RequestTimeout(
                f"no subscribe reply for {sub.channel} within {client._request_timeout}s"
            ) from None
        except BaseException:
            if not ready.done():
                ready.cancel()
            await self._stop_subscription(sub)
            raise

    async def _stop_subscription(self, sub: Subscription) -> None:
        sub._finish()
        if self._subs.get(sub.channel) is not sub:
            return
        del self._subs[sub.channel]
        self._batched.discard(sub)
        worker = self._workers.pop(sub, None)
        if worker is not None and worker is not asyncio.current_task():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        client, conn = self._client, self._client._conn
        if sub._is_ready and conn is not None and conn.connected and not client._closed:
            try:
                async with asyncio.timeout(client._request_timeout):
                    checked_ack(await conn.request("unsubscribe", {"channel": sub.channel}))
            except (TandemError, TimeoutError) as exc:
                log.debug("unsubscribe %s: %s", sub.channel, exc)

    def _schedule_sync(self, sub: Subscription) -> None:
        sub._syncing = True
        sub._needs_sync = True
        if sub not in self._batched:
            self._start_worker(sub)

    # -- the client's ----------------------------------------------------------------------

    def restore(self, conn: Connection) -> None:
        """A new connection: subscribe everything again on it, in batches."""
        waiting = []
        for sub in self._subs.values():
            sub._syncing = True
            sub._needs_sync = True
            worker = self._workers.get(sub)
            if worker is None or worker.done():
                waiting.append(sub)  # a running worker goes on by itself, on this connection
        if self._restore is not None:
            self._restore.cancel()  # its connection is gone; these go in this round
        self._batched.update(waiting)
        self._restore = asyncio.create_task(
            self._restore_all(conn, waiting), name="tandem-resubscribe"
        )

    def drop(self, sub: Subscription, error: TandemError) -> None:
        """End ``sub`` with ``error`` (raised to its reader)."""
        log.warning("subscription %s failed: %s", sub.channel, error)
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        self._workers.pop(sub, None)
        self._batched.discard(sub)
        sub._fail(error)

    def fail(self, error: TandemError) -> None:
        """The client gave up: end every subscription with ``error``."""
        for sub in list(self._subs.values()):
            self.drop(sub, error)

    async def close(self) -> None:
        tasks = [t for t in (self._restore, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sub in list(self._subs.values()):
            sub._finish()
        self._subs.clear()
        self._workers.clear()
        self._batched.clear()

    # -- after a reconnect: subscribe_many ---------------------------------------------------

    async def _restore_all(self, conn: Connection, subs: Sequence[Subscription]) -> None:
        batches = True
        for start in range(0, len(subs), MAX_BATCH):
            chunk = subs[start : start + MAX_BATCH]
            if batches:
                batches = await self._restore_batch(conn, chunk)
            if not batches:  # an older server: one subscribe each
                self._unbatch(chunk, attempt=0)

    async def _restore_batch(self, conn: Connection, chunk: Sequence[Subscription]) -> bool:
        """Re-subscribe ``chunk`` in one request (again after a transient refusal); False
        when the server does not know ``subscribe_many``."""
        attempt = 0
        while True:
            live = [sub for sub in chunk if sub in self._batched]
            if not live:
                return True
            requests = []
            for sub in live:
                sub._needs_sync = False
                requests.append(sub._sync_request())
            try:
                ack = await self._client._request(
                    conn, BATCH_EVENT, {"subscriptions": [payload for payload, _ in requests]}
                )
                results = ack["results"]
                if not isinstance(results, list) or len(results) != len(live):
                    raise TypeError(f"{len(live)} subscriptions, results {results!r:.200}")
            except TandemError as exc:
                for sub, (_, reset) in zip(live, requests, strict=True):
                    sub._sync_failed(reset)
                if _unknown_event(exc):
                    return False
                if isinstance(exc, ConnectionLost):
                    return True  # the next connection restores them
                if not is_transient(exc) or self._client._closed:
                    self._unbatch(live, attempt=0)  # each gets its own answer
                    return True
                await self._client._backoff(attempt)
                attempt += 1
                continue
            except (KeyError, TypeError) as exc:
                error = error_class("internal")(f"malformed subscribe_many ack: {exc!r}")
                for sub in live:
                    self.drop(sub, error)
                return True
            for sub, (payload, reset), result in zip(live, requests, results, strict=True):
                self._batched.discard(sub)
                outcome = self._settle(sub, result, payload, reset)
                if outcome is _Outcome.RETRY:
                    self._start_worker(sub, attempt=1)
                elif outcome is _Outcome.APPLIED and sub._needs_sync:
                    self._start_worker(sub)  # a gap or an overflow came meanwhile
            return True

    def _unbatch(self, subs: Sequence[Subscription], *, attempt: int) -> None:
        for sub in subs:
            if sub in self._batched:
                self._batched.discard(sub)
                self._start_worker(sub, attempt=attempt)

    # -- one subscription at a time: subscribe -----------------------------------------------

    def _start_worker(self, sub: Subscription, *, attempt: int = 0) -> None:
        sub._syncing = True
        sub._needs_sync = True
        worker = self._workers.get(sub)
        if (worker is None or worker.done()) and not self._client._closed:
            self._workers[sub] = asyncio.create_task(
                self._sync_worker(sub, attempt), name=f"tandem-sync-{sub.channel}"
            )

    async def _sync_worker(self, sub: Subscription, attempt: int) -> None:
        """(Re)subscribe until the server has answered the latest request for this channel;
        ``attempt`` > 0: back off first (the last try was refused)."""
        client = self._client
        if attempt:
            await client._backoff(attempt - 1)
        while sub._needs_sync and sub.active:
            sub._needs_sync = False
            payload, reset = sub._sync_request()
            reply: object
            try:
                conn = await client._wait_connection()
                async with asyncio.timeout(client._request_timeout):
                    reply = await conn.request("subscribe", payload)
            except TimeoutError:
                sub._sync_failed(reset)
                await client._backoff(attempt)
                attempt += 1
                continue
            except ConnectionLost:
                sub._sync_failed(reset)  # the supervisor brings the connection back
                continue
            except TandemError as exc:
                reply = exc
            outcome = self._settle(sub, reply, payload, reset)
            if outcome is _Outcome.DROPPED:
                return
            if outcome is _Outcome.RETRY:
                await client._backoff(attempt)
                attempt += 1
            else:
                attempt = 0

    def _settle(
        self, sub: Subscription, reply: object, payload: Mapping[str, Any], reset: bool
    ) -> _Outcome:
        """Apply one subscribe's answer (an ack, an error ack, or the error raised)."""
        client = self._client
        try:
            if isinstance(reply, TandemError):
                raise reply
            sub._apply_ack(checked_ack(reply), asked_since="since" in payload, reset=reset)
        except TandemError as exc:
            first = not sub._is_ready
            retry = isinstance(exc, RateLimited) if first else is_transient(exc)
            if not retry or exc is client._fatal or client._closed:
                self.drop(sub, exc)
                return _Outcome.DROPPED
            sub._sync_failed(reset)
            return _Outcome.RETRY
        except (KeyError, TypeError, ValueError) as exc:
            self.drop(sub, error_class("internal")(f"malformed subscribe ack: {exc!r}"))
            return _Outcome.DROPPED
        return _Outcome.APPLIED


def _unknown_event(error: TandemError) -> bool:
    """The answer of a server older than subscribe_many (its catch-all handler)."""
    return isinstance(error, InvalidPayload) and error.message.startswith("unknown event")
