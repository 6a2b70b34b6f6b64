"""RedisDocBus: one pub/sub channel per open document, ``{p}{doc:<id>}:y``.

Only nodes holding a document open subscribe to it (per-channel subscriptions; sharded
pub/sub on Redis Cluster with ``sharded=1``). Messages are the raw Yjs bytes with the sender's
node id, so every node drops its own echoes. The listener owns its reconnects: after one, it
subscribes again and tells the engine, which runs a state-vector exchange for every open
document, since whatever was published meanwhile is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from types import TracebackType
from typing import Any, Self

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime.collab.bus import BusMessage, BusUnavailable, MessageHandler, ReconnectHandler
from realtime.redis import command_client, split_url

log = logging.getLogger(__name__)

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_MAX_BACKOFF_S = 2.0
_SUFFIX = "}:y"


class RedisDocBus:
    def __init__(
        self,
        url: str,
        node_id: str,
        on_message: MessageHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        self._url, self._prefix, self._sharded = split_url(url)
        self.node_id = node_id
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._redis: aioredis.Redis | None = None
        self._listener_redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._subscribed: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._connected = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._redis = command_client(self._url)
        self._listener_redis = aioredis.from_url(
            self._url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2
        )
        self._listener = asyncio.create_task(self._listen_forever(), name="redis-doc-bus")
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
        await self._close_pubsub()
        for client in (self._redis, self._listener_redis):
            if client is not None:
                await client.aclose()
        self._redis = self._listener_redis = None

    async def publish(self, message: BusMessage) -> None:
        if self._redis is None:
            raise BusUnavailable("the bus is not running: use `async with bus:`")
        try:
            if self._sharded:
                await self._redis.spublish(self._key(message.doc_id), message.encode())
            else:
                await self._redis.publish(self._key(message.doc_id), message.encode())
        except _ERRORS as exc:
            raise BusUnavailable(f"redis: {exc}") from exc

    async def subscribe(self, doc_id: str) -> None:
        if doc_id in self._subscribed:
            return
        self._subscribed.add(doc_id)
        pubsub = self._pubsub
        if not self._connected.is_set() or pubsub is None:
            return  # the listener subscribes everything in _subscribed when it is back
        try:
            await self._subscribe_now(pubsub, [doc_id])
        except (*_ERRORS, BusUnavailable) as exc:
            # Kept in _subscribed: the reconnect subscribes it and the engine resyncs.
            log.warning("could not subscribe to document %s yet (%s)", doc_id, exc)

    async def unsubscribe(self, doc_id: str) -> None:
        if doc_id not in self._subscribed:
            return
        self._subscribed.discard(doc_id)
        if self._connected.is_set() and self._pubsub is not None:
            command = self._pubsub.sunsubscribe if self._sharded else self._pubsub.unsubscribe
            with contextlib.suppress(*_ERRORS):
                await command(self._key(doc_id))

    async def peers(self, doc_id: str) -> int:
        if self._redis is None:
            return 0
        key = self._key(doc_id)
        try:
            if self._sharded:
                reply = await self._redis.pubsub_shardnumsub(key)
            else:
                reply = await self._redis.pubsub_numsub(key)
        except _ERRORS:
            return 0
        count = int(reply[0][1]) if reply else 0  # [(channel, subscribers)]
        return max(0, count - (1 if doc_id in self._subscribed else 0))

    # -- internals --------------------------------------------------------------------------

    def _key(self, doc_id: str) -> str:
        return f"{self._prefix}{{doc:{doc_id}{_SUFFIX}"

    def _doc_of(self, key: bytes | str) -> str:
        name = key.decode() if isinstance(key, bytes) else key
        return name[len(self._prefix) + len("{doc:") : -len(_SUFFIX)]

    async def _subscribe_now(self, pubsub: Any, doc_ids: list[str]) -> None:
        """Subscribe and wait for Redis to confirm, so what is published after is heard."""
        loop = asyncio.get_running_loop()
        waits = []
        for doc_id in doc_ids:
            future = self._confirmations.get(doc_id)
            if future is None or future.done():
                future = self._confirmations[doc_id] = loop.create_future()
            waits.append(future)
        command = pubsub.ssubscribe if self._sharded else pubsub.subscribe
        await command(*(self._key(doc_id) for doc_id in doc_ids))
        try:
            async with asyncio.timeout(5):
                await asyncio.gather(*waits)
        except TimeoutError:
            raise BusUnavailable("redis did not confirm the subscription") from None

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _listen_forever(self) -> None:
        delay, lost = 0.1, False
        while True:
            try:
                await self._connect_and_listen(resync=lost)
            except asyncio.CancelledError:
                raise
            except _ERRORS as exc:
                log.warning("document bus connection lost (%s); reconnecting", exc)
            except Exception:
                log.exception("document bus listener failed; reconnecting")
            if self._connected.is_set():
                delay = 0.1
            self._connected.clear()
            lost = True
            await self._close_pubsub()
            for future in self._confirmations.values():
                if not future.done():
                    future.cancel()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _connect_and_listen(self, *, resync: bool) -> None:
        if self._listener_redis is None:
            raise RuntimeError("RedisDocBus is not running")
        pubsub: Any = self._listener_redis.pubsub(ignore_subscribe_messages=False)
        self._pubsub = pubsub
        await pubsub.connect()
        reader = asyncio.create_task(self._read(pubsub))
        try:
            if self._subscribed:
                await self._subscribe_now(pubsub, sorted(self._subscribed))
            self._connected.set()
            if resync:
                await self._on_reconnect()
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
            if kind in ("subscribe", "ssubscribe"):
                future = self._confirmations.get(self._doc_of(message["channel"]))
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind in ("message", "smessage"):
                await self._receive(self._doc_of(message["channel"]), message["data"])

    async def _receive(self, doc_id: str, raw: bytes) -> None:
        if doc_id not in self._subscribed:
            return
        try:
            message = BusMessage.decode(doc_id, raw)
        except ValueError:
            log.warning("dropping a malformed message on document %s", doc_id)
            return
        if message.node == self.node_id:
            return  # our own echo: Redis delivers a publisher's messages to it too
        try:
            await self._on_message(message)
        except Exception:
            log.exception("document bus handler failed for %s", doc_id)
