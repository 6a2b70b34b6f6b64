"""RedisDocBus: one pub/sub channel per open document, ``{p}{doc:<id>}:y``.

Only nodes holding a document open subscribe to it (per-channel subscriptions; sharded
pub/sub with ``sharded=1`` and on a Redis Cluster). Messages are the raw Yjs bytes with the
sender's node id, so every node drops its own echoes. After a lost connection the subscriber
(``RedisSubscriber``) subscribes again and the engine is told, which runs a state-vector
exchange for every open document: whatever was published meanwhile is gone.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from redis.asyncio.cluster import RedisCluster

from domain.group_commit import GroupCommit
from realtime.collab.bus import BusMessage, BusUnavailable, MessageHandler, ReconnectHandler
from realtime.redis_connection import (
    CONNECT_ERRORS,
    CallGate,
    Commands,
    RedisTarget,
    command_client,
    discover,
)
from realtime.redis_subscriber import NotConfirmed, RedisSubscriber

log = logging.getLogger(__name__)

_SUFFIX = "}:y"


class RedisDocBus:
    def __init__(
        self,
        url: str,
        node_id: str,
        on_message: MessageHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        self._target = RedisTarget.parse(url)
        self.node_id = node_id
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._redis: Commands | None = None
        self._gate = CallGate(self._target)
        self._subscriber = RedisSubscriber(
            self._target,
            on_message=self._receive,
            on_connected=self._connected,
            name="redis-doc-bus",
        )
        self._publishes: GroupCommit[BusMessage, None] = GroupCommit(
            self._publish_batch, max_batch=500
        )

    async def __aenter__(self) -> Self:
        self._redis = command_client(self._target)
        await discover(self._redis)
        await self._subscriber.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._subscriber.__aexit__(exc_type, exc, tb)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def publish(self, message: BusMessage) -> None:
        if self._redis is None:
            raise BusUnavailable("the bus is not running: use `async with bus:`")
        await self._publishes.submit(message)

    async def _publish_batch(self, messages: list[BusMessage]) -> list[None]:
        """Every message that queued up behind the previous batch, in one pipeline: typing
        in a busy document is many small messages, and a round trip each was a fifth of a
        node's CPU per update (py-spy)."""
        if self._redis is None:
            raise BusUnavailable("the bus is not running")
        try:
            async with self._gate(self._redis), self._redis.pipeline(transaction=False) as pipe:
                for message in messages:
                    publish = pipe.spublish if self._target.sharded else pipe.publish
                    publish(self._key(message.doc_id), message.encode())
                await pipe.execute()
        except CONNECT_ERRORS as exc:
            raise BusUnavailable(f"redis: {exc}") from exc
        return [None] * len(messages)

    async def subscribe(self, doc_id: str) -> None:
        try:
            await self._subscriber.subscribe(self._key(doc_id))
        except (*CONNECT_ERRORS, NotConfirmed) as exc:
            # Still listed: the reconnect subscribes it, and the engine resyncs after it.
            log.warning("could not subscribe to document %s yet (%s)", doc_id, exc)

    async def unsubscribe(self, doc_id: str) -> None:
        await self._subscriber.unsubscribe(self._key(doc_id))

    async def peers(self, doc_id: str) -> int:
        if self._redis is None:
            return 0
        key = self._key(doc_id)
        try:
            async with self._gate(self._redis):
                if isinstance(self._redis, RedisCluster):  # asked where the channel lives
                    node = self._redis.get_node_from_key(key)
                    reply = await self._redis.pubsub_shardnumsub(key, target_nodes=node)
                elif self._target.sharded:
                    reply = await self._redis.pubsub_shardnumsub(key)
                else:
                    reply = await self._redis.pubsub_numsub(key)
        except CONNECT_ERRORS:
            return 0
        count = int(reply[0][1]) if reply else 0  # [(channel, subscribers)]
        return max(0, count - (1 if key in self._subscriber.keys else 0))

    def _key(self, doc_id: str) -> str:
        return self._target.key(f"doc:{doc_id}", "y")

    async def _connected(self, lost: bool) -> None:
        if lost:
            await self._on_reconnect()

    async def _receive(self, key: str, raw: bytes) -> None:
        doc_id = key[len(self._target.prefix) + len("{doc:") : -len(_SUFFIX)]
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
