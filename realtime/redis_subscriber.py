"""RedisSubscriber: one pub/sub connection that outlives Redis restarts and network cuts.

The broker and the document bus each own one. It holds the set of keys its owner listens to,
subscribes to them (plainly, or sharded on Redis Cluster), waits for Redis to confirm each
subscription, hands every message over in order, and after a lost connection reconnects with
a capped backoff, subscribes everything again and tells its owner (``on_connected``) before it
counts as connected: whatever was published meanwhile is gone from pub/sub, and only the owner
knows how to make up for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CONNECT_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_MAX_BACKOFF_S = 2.0
_CONFIRM_TIMEOUT_S = 5.0

# Called with a key and a message's bytes, in the order Redis sent them.
MessageCallback = Callable[[str, bytes], Awaitable[None]]
# Called after each (re)connection, before the subscriber counts as connected; the argument
# says whether a connection was lost before it.
ConnectedCallback = Callable[[bool], Awaitable[None]]


class NotConfirmed(Exception):
    """Redis did not confirm a subscription in time."""


class RedisSubscriber:
    def __init__(
        self,
        url: str,
        *,
        sharded: bool,
        on_message: MessageCallback,
        on_connected: ConnectedCallback,
        name: str,
    ) -> None:
        self._url = url
        self._sharded = sharded
        self._on_message = on_message
        self._on_connected = on_connected
        self._name = name
        self.keys: set[str] = set()
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._pubsub is not None

    async def __aenter__(self) -> Self:
        # It owns its reconnects: no hidden retries that would hide a gap from its owner.
        self._redis = aioredis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2,
            health_check_interval=10,
        )
        self._listener = asyncio.create_task(self._listen_forever(), name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._close_pubsub()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def subscribe(self, key: str) -> None:
        """Listen to ``key`` from now on: at once when connected (returning once Redis has
        confirmed it, so nothing published after is missed), else at the next connection.

        Raises:
            RedisError, OSError, NotConfirmed: the subscription was not confirmed; ``key``
                stays listed and is subscribed at the next connection.
        """
        self.keys.add(key)
        if self.connected:
            await self._subscribe_now(self._pubsub, [key])

    async def unsubscribe(self, key: str) -> None:
        self.keys.discard(key)
        if self.connected:
            command = self._pubsub.sunsubscribe if self._sharded else self._pubsub.unsubscribe
            with contextlib.suppress(*CONNECT_ERRORS):
                await command(key)

    async def _subscribe_now(self, pubsub: Any, keys: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        waits, names = [], sorted(keys)
        for key in names:
            future = self._confirmations.get(key)
            if future is None or future.done():
                future = self._confirmations[key] = loop.create_future()
            waits.append(future)
        command = pubsub.ssubscribe if self._sharded else pubsub.subscribe
        await command(*names)
        try:
            async with asyncio.timeout(_CONFIRM_TIMEOUT_S):
                await asyncio.gather(*waits)
        except TimeoutError:
            raise NotConfirmed("redis did not confirm the subscription") from None

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _listen_forever(self) -> None:
        delay, lost = 0.1, False
        while True:
            try:
                await self._connect_and_listen(lost)
            except asyncio.CancelledError:
                raise
            except CONNECT_ERRORS as exc:
                log.warning("%s: redis pub/sub connection lost (%s); reconnecting", self._name, exc)
            except Exception:
                log.exception("%s: redis listener failed; reconnecting", self._name)
            if self._connected.is_set():
                delay = 0.1  # it was up: start the backoff afresh
            self._connected.clear()
            lost = True
            await self._close_pubsub()
            for future in self._confirmations.values():
                if not future.done():
                    future.cancel()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _connect_and_listen(self, lost: bool) -> None:
        if self._redis is None:
            raise RuntimeError("RedisSubscriber is not running: use `async with`")
        pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=False)
        self._pubsub = pubsub
        await pubsub.connect()
        reader = asyncio.create_task(self._read(pubsub))
        try:
            if self.keys:
                await self._subscribe_now(pubsub, self.keys)
            await self._on_connected(lost)
            self._connected.set()
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message["type"]
            key = message["channel"]
            key = key.decode() if isinstance(key, bytes) else key
            if kind in ("subscribe", "ssubscribe"):
                future = self._confirmations.get(key)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind in ("message", "smessage") and key in self.keys:
                await self._on_message(key, message["data"])
