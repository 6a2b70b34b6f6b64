"""RedisSubscriber: pub/sub that outlives Redis restarts, network cuts and cluster failovers.

The broker and the document bus each own one. It holds the set of keys its owner listens to,
subscribes to them (plainly, or sharded), waits for Redis to confirm each subscription, hands
every message over in order, and after a lost connection reconnects with a capped backoff,
subscribes everything again and tells its owner (``on_connected``) before it counts as
connected: whatever was published meanwhile is gone from pub/sub, and only the owner knows how
to make up for it.

On a Redis Cluster it holds one sharded pub/sub connection per primary, each key subscribed on
the primary that owns its slot, and counts as one connection: when any of them fails (the
primary died, or Redis moved a slot away and unsubscribed its channels), it reads the cluster's
topology afresh, connects to the primaries it finds and subscribes everything again, so after a
failover each key is heard on the replica that took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError, SlotNotCoveredError

from realtime.redis_connection import CONNECT_ERRORS, RedisTarget

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 2.0
# A failover completes about a second after the primary is marked failed, and an attempt in
# the meantime costs a CLUSTER SLOTS and a few refused connections: retry sooner.
_MAX_BACKOFF_CLUSTER_S = 0.5
_CONFIRM_TIMEOUT_S = 5.0
_SINGLE = ""  # the one connection's name on a single Redis

# Called with a key and a message's bytes, in the order Redis sent them.
MessageCallback = Callable[[str, bytes], Awaitable[None]]
# Called after each (re)connection, before the subscriber counts as connected; the argument
# says whether a connection was lost before it.
ConnectedCallback = Callable[[bool], Awaitable[None]]


class NotConfirmed(Exception):
    """Redis did not confirm a subscription in time."""


class TopologyChanged(RedisConnectionError):
    """A key's slot is not served where this subscriber listens any more."""


def _options() -> dict[str, Any]:
    # It owns its reconnects: no hidden retries that would hide a gap from its owner.
    return {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2}


class RedisSubscriber:
    def __init__(
        self,
        target: RedisTarget,
        *,
        on_message: MessageCallback,
        on_connected: ConnectedCallback,
        name: str,
    ) -> None:
        self._target = target
        self._on_message = on_message
        self._on_connected = on_connected
        self._name = name
        self.keys: set[str] = set()
        # A single Redis's client, or a cluster client that only reads the topology.
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._pubsubs: dict[str, Any] = {}  # by node name (_SINGLE on a single Redis)
        self._node_clients: list[aioredis.Redis] = []
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._leaving: Counter[str] = Counter()  # unsubscribes sent, not yet confirmed
        self._failed: asyncio.Future[None] | None = None
        self._connected = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and bool(self._pubsubs)

    async def __aenter__(self) -> Self:
        if self._target.cluster:
            self._redis = RedisCluster.from_url(self._target.url, **_options())
        else:
            self._redis = aioredis.from_url(
                self._target.url, health_check_interval=10, **_options()
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
        await self._close_pubsubs()
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
            await self._subscribe_now([key])

    async def unsubscribe(self, key: str) -> None:
        self.keys.discard(key)
        if not self.connected:
            return
        pubsub = self._pubsub_of(key)
        if pubsub is None:
            return
        self._leaving[key] += 1
        with contextlib.suppress(*CONNECT_ERRORS):
            await (pubsub.sunsubscribe if self._target.sharded else pubsub.unsubscribe)(key)

    def _pubsub_of(self, key: str) -> Any:
        """The connection ``key`` is subscribed on: the one to its slot's primary, as the
        topology read at the last connection has it (None if that has no such primary)."""
        if not isinstance(self._redis, RedisCluster):
            return self._pubsubs.get(_SINGLE)
        try:
            node = self._redis.get_node_from_key(key)
        except SlotNotCoveredError:
            return None
        return None if node is None else self._pubsubs.get(node.name)

    async def _subscribe_now(self, keys: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        waits, names = [], sorted(keys)
        for key in names:
            future = self._confirmations.get(key)
            if future is None or future.done():
                future = self._confirmations[key] = loop.create_future()
            waits.append(future)
        if self._target.cluster:
            # One SSUBSCRIBE per key: a command's shard channels must share a slot.
            for key in names:
                pubsub = self._pubsub_of(key)
                if pubsub is None:  # the cluster changed since: read it again
                    self._fail(TopologyChanged(f"{key}: its primary is not one listened to"))
                    break
                await pubsub.ssubscribe(key)
        else:
            pubsub = self._pubsubs[_SINGLE]
            await (pubsub.ssubscribe if self._target.sharded else pubsub.subscribe)(*names)
        done, pending = await asyncio.wait(waits, timeout=_CONFIRM_TIMEOUT_S)
        if pending or any(future.cancelled() for future in done):
            raise NotConfirmed("redis did not confirm the subscription")

    def _fail(self, exc: BaseException) -> None:
        """One connection broke: the listener starts over, and no confirmation is coming."""
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)
        self._cancel_confirmations()

    def _cancel_confirmations(self) -> None:
        for future in self._confirmations.values():
            if not future.done():
                future.cancel()

    async def _open(self) -> None:
        if isinstance(self._redis, aioredis.Redis):
            pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=False)
            self._pubsubs[_SINGLE] = pubsub
            await pubsub.connect()
            return
        if self._redis is None:
            raise RuntimeError("RedisSubscriber is not running: use `async with`")
        await self._redis.aclose()  # forget the topology it knew: it is read afresh
        await self._redis.initialize()
        for node in self._redis.get_primaries():
            client = aioredis.from_url(
                self._target.node_url(node.host, int(node.port)),
                health_check_interval=10,
                **_options(),
            )
            self._node_clients.append(client)
            pubsub = client.pubsub(ignore_subscribe_messages=False)
            self._pubsubs[node.name] = pubsub
            await pubsub.connect()

    async def _close_pubsubs(self) -> None:
        pubsubs, self._pubsubs = self._pubsubs, {}
        clients, self._node_clients = self._node_clients, []
        for pubsub in pubsubs.values():
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen_forever(self) -> None:
        delay, lost = 0.1, False
        cap = _MAX_BACKOFF_CLUSTER_S if self._target.cluster else _MAX_BACKOFF_S
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
            self._cancel_confirmations()
            await self._close_pubsubs()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, cap)

    async def _connect_and_listen(self, lost: bool) -> None:
        failed = self._failed = asyncio.get_running_loop().create_future()
        self._leaving.clear()
        readers: list[asyncio.Task[None]] = []
        try:
            await self._open()
            readers = [asyncio.create_task(self._read(p)) for p in self._pubsubs.values()]
            if self.keys:
                try:
                    await self._subscribe_now(self.keys)
                except NotConfirmed:
                    if failed.done():
                        await failed  # what broke, rather than its consequence
                    raise
            await self._on_connected(lost)
            self._connected.set()
            await failed
        finally:
            for reader in readers:
                reader.cancel()
            for reader in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if failed.done() and not failed.cancelled():
                failed.exception()  # retrieved: it was logged by whoever raised it
            else:
                failed.cancel()

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    await self._handle(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        key = message["channel"]
        key = key.decode() if isinstance(key, bytes) else key
        if kind in ("message", "smessage"):
            if key in self.keys:
                await self._on_message(key, message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            future = self._confirmations.get(key)
            if future is not None and not future.done():
                future.set_result(None)
        elif kind in ("unsubscribe", "sunsubscribe"):
            left = self._leaving.pop(key, 0)
            if left > 1:
                self._leaving[key] = left - 1
            elif (
                not left and key in self.keys
            ):  # Redis let go of it: its slot moved to another node
                raise TopologyChanged(f"{key}: redis unsubscribed it")
