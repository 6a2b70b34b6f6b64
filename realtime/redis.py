"""RedisBroker: per-channel streams and per-channel pub/sub shared by every node.

Per channel (keys hash-tagged on the channel, so one channel lives in one cluster slot):

- ``{p}{<ch>}:m`` hash ``epoch``, ``top`` (and on a cluster ``node``): the stream's epoch and
  its last offset;
- ``{p}{<ch>}:s`` stream of retained publications, entry id ``<offset>-0``;
- ``{p}{<ch>}:p`` pub/sub channel that live publications go out on;
- ``{p}{<ch>}:i:<key>`` idempotency records.

One Lua script assigns the offset, appends to the stream and publishes, so offsets are
serialized per channel in Redis itself; a history that may have lost its end starts a new
epoch, and clients holding the old one are told they cannot recover (realtime/redis_scripts.py).

Each node subscribes only to channels it has local subscribers for, and delivers what it
hears in offset order: a jump in offsets is repaired from the stream before delivery, and
after a reconnect every channel is caught up from the stream the same way.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any, Self

import msgpack
from redis.exceptions import NoScriptError

from domain.group_commit import GroupCommit
from realtime.broker import (
    BrokerOptions,
    BrokerUnavailable,
    History,
    Publication,
    PublicationHandler,
    PublishResult,
    ResetHandler,
    StreamPosition,
    UnrecoverablePosition,
)
from realtime.memory import new_epoch
from realtime.redis_connection import (
    CONNECT_ERRORS,
    CallGate,
    Commands,
    RedisTarget,
    check_server,
    command_client,
    discover,
    primaries,
)
from realtime.redis_scripts import history_script, publish_script
from realtime.redis_subscriber import NotConfirmed, RedisSubscriber

log = logging.getLogger(__name__)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisBroker:
    """Broker for several nodes sharing one Redis (``redis://host:port/db?prefix=tandem:``) or
    one Redis Cluster (``redis://node:port?prefix=tandem:&cluster=1``; see redis_connection).
    """

    def __init__(
        self,
        url: str,
        options: BrokerOptions,
        handler: PublicationHandler,
        *,
        on_reset: ResetHandler | None = None,
    ) -> None:
        self._target = RedisTarget.parse(url)
        self._options = options
        self._handler = handler
        self._on_reset = on_reset
        self._redis: Commands | None = None
        self._gate = CallGate(self._target)
        self._subscriber = RedisSubscriber(
            self._target,
            on_message=self._on_message,
            on_connected=self._on_connected,
            name="redis-broker-listener",
        )
        # The last offset this node delivered on each subscribed channel.
        self._positions: dict[str, StreamPosition] = {}
        self._publish_script: Any = None
        self._history_script: Any = None
        self._publish_command = "SPUBLISH" if self._target.sharded else "PUBLISH"
        # The scripts' TTL arguments, in ms, computed once rather than per call.
        self._meta_ms = _ms(options.stream_meta_ttl)
        self._idempotency_ms = _ms(options.idempotency_ttl)
        self._publishes: GroupCommit[tuple[Any, ...], PublishResult] = GroupCommit(
            self._publish_batch
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await check_server(self._target)
        self._redis = command_client(self._target)
        await discover(self._redis)
        cluster = self._target.cluster
        self._publish_script = self._redis.register_script(publish_script(cluster=cluster))
        self._history_script = self._redis.register_script(history_script(cluster=cluster))
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

    # -- the Broker contract ----------------------------------------------------------------

    async def publish(
        self, channel: str, event: str, data: Any, *, idempotency_key: str | None = None
    ) -> PublishResult:
        payload = msgpack.packb([event, data, time.time(), self._options.node_id])
        retention = self._options.retention_of(channel)
        keys: tuple[str, ...] = (
            self._key(channel, "s"),
            self._key(channel, "m"),
            self._key(channel, "p"),
        )
        if idempotency_key is not None:
            keys += (self._key(channel, f"i:{idempotency_key}"),)
        args = (
            payload,
            retention.size,
            _ms(retention.ttl),
            self._meta_ms,
            new_epoch(),
            self._idempotency_ms,
            self._publish_command,
        )
        return await self._publishes.submit((len(keys), *keys, *args))

    async def _publish_batch(self, calls: list[tuple[Any, ...]]) -> list[PublishResult | Exception]:
        """One pipeline for every publish that queued up behind the previous one: one
        connection checkout, one write and one read for the lot instead of per publication,
        and publishes reach Redis in the order they were made."""
        redis, script = self._running(self._redis), self._running(self._publish_script)
        try:
            async with self._gate(redis):
                replies = await self._evalsha_all(redis, script, calls)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:  # Redis lost its scripts (restart, SCRIPT FLUSH): none of these ran
                    script.sha = await redis.script_load(script.script)
                    again = await self._evalsha_all(redis, script, [calls[i] for i in missing])
                    for i, reply in zip(missing, again, strict=True):
                        replies[i] = reply
        except CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        results: list[PublishResult | Exception] = []
        for reply in replies:
            if isinstance(reply, Exception):
                results.append(BrokerUnavailable(f"redis: {reply}"))
                continue
            duplicate, position = reply
            epoch, _, offset = position.decode().rpartition(":")
            results.append(PublishResult(int(offset), epoch, duplicate=bool(duplicate)))
        return results

    @staticmethod
    async def _evalsha_all(redis: Commands, script: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
        # A cluster pipeline sends each primary its share at once (in call order per channel,
        # as a channel lives on one). redis-py refuses its `evalsha` helper there, not the
        # command itself.
        async with redis.pipeline(transaction=False) as pipe:
            for call in calls:  # numkeys, keys, args
                pipe.execute_command("EVALSHA", script.sha, *call)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def subscribe(self, channel: str) -> None:
        # While the listener reconnects, a subscriber could be told a position the node has
        # not caught up to yet; refusing (retryably) keeps every join exact.
        if not self._subscriber.connected:
            raise BrokerUnavailable("redis pub/sub is reconnecting; retry")
        key = self._key(channel, "p")
        if key in self._subscriber.keys:
            return
        try:
            await self._subscriber.subscribe(key)
            position = (await self.history(channel, limit=0)).position
        except (*CONNECT_ERRORS, NotConfirmed, BrokerUnavailable) as exc:
            await self._subscriber.unsubscribe(key)
            raise BrokerUnavailable(f"redis: {exc}") from exc
        # A live message may already have set it; it is at least as recent.
        self._positions.setdefault(channel, position)

    async def unsubscribe(self, channel: str) -> None:
        key = self._key(channel, "p")
        if key in self._subscriber.keys:
            self._positions.pop(channel, None)
            await self._subscriber.unsubscribe(key)

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> History:
        if since is not None and not self._options.retention_of(channel).recovery:
            raise UnrecoverablePosition(f"recovery is off on {channel}")
        return await self._read(channel, since=since, limit=limit)

    async def _read(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> History:
        """``history``, also after a position where recovery is off: this node repairs its
        own delivery from the stream whatever the channel lets subscribers do."""
        keys = [self._key(channel, "s"), self._key(channel, "m")]
        args = [
            new_epoch(),
            self._meta_ms,
            since.offset if since is not None else -1,
            limit if limit is not None and since is None else -1,
        ]
        try:
            script, redis = self._running(self._history_script), self._running(self._redis)
            async with self._gate(redis):
                raw_epoch, top, entries = await script(keys=keys, args=args)
        except CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        position = StreamPosition(raw_epoch.decode(), int(top))
        publications = self._decode_entries(channel, position.epoch, entries)
        if since is None:
            if limit is not None and limit > 0:
                publications.reverse()  # XREVRANGE gave newest first
            return History(publications, position)
        if since.epoch != position.epoch or since.offset > position.offset:
            raise UnrecoverablePosition(
                f"position {since.epoch}/{since.offset} is not in stream {position.epoch}"
            )
        missed = position.offset - since.offset
        if limit is not None and missed > limit:
            raise UnrecoverablePosition(f"{missed} publications missed; the limit is {limit}")
        if missed and (not publications or publications[0].offset != since.offset + 1):
            raise UnrecoverablePosition(f"publications after offset {since.offset} have expired")
        return History(publications[:missed], position)

    async def ping(self) -> None:
        if self._redis is None:
            raise RuntimeError("RedisBroker is not running: use `async with broker:`")
        try:
            async with self._gate(self._redis):
                await self._redis.ping(**primaries(self._redis))
        except CONNECT_ERRORS as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        if not self._subscriber.connected:
            raise BrokerUnavailable("redis pub/sub is not connected yet")

    # -- internals --------------------------------------------------------------------------

    def _key(self, channel: str, suffix: str) -> str:
        return self._target.key(channel, suffix)

    def _running(self, part: Any) -> Any:
        """``part`` (a script, the client) of a running broker."""
        if part is None:
            raise RuntimeError("RedisBroker is not running: use `async with broker:`")
        return part

    def _decode_entries(self, channel: str, epoch: str, entries: list[Any]) -> list[Publication]:
        horizon = time.time() - self._options.retention_of(channel).ttl
        publications = []
        for entry_id, fields in entries:
            offset = int(entry_id.split(b"-")[0])
            # Script replies keep the raw field list: [b"p", payload].
            pub = self._decode(channel, offset, epoch, fields[1])
            if pub is not None and pub.ts >= horizon:
                publications.append(pub)
        return publications

    def _decode(self, channel: str, offset: int, epoch: str, payload: bytes) -> Publication | None:
        try:
            event, data, ts, _node = msgpack.unpackb(payload)
            return Publication(channel, str(event), data, offset, epoch, float(ts))
        except Exception:
            log.warning("dropping undecodable publication on %s#%d", channel, offset)
            return None

    async def _on_connected(self, _lost: bool) -> None:
        # Caught up before counting as connected: no subscriber is told a position ahead of
        # what this node has delivered.
        await self._catch_up()

    async def _on_message(self, key: str, raw: bytes) -> None:
        await self._receive(self._channel_of(key), raw)

    def _channel_of(self, key: str) -> str:
        return key[len(self._target.prefix) + 1 : -len("}:p")]

    async def _receive(self, channel: str, raw: bytes) -> None:
        try:
            # Lua's cmsgpack writes strings as raw bytes: decode the frame without UTF-8.
            offset, epoch, payload = msgpack.unpackb(raw, raw=True)
            pub = self._decode(channel, int(offset), epoch.decode(), payload)
        except Exception:
            log.warning("dropping malformed message on %s", channel)
            return
        if pub is None:
            return
        last = self._positions.get(channel)
        if last is not None and last.epoch == pub.epoch:
            if pub.offset <= last.offset:
                return  # already delivered (repair raced with live delivery)
            if pub.offset > last.offset + 1:
                if not await self._repair(channel, last):
                    return
                # The stream already held this publication: the repair delivered it.
                current = self._positions[channel]
                if current.epoch == pub.epoch and pub.offset <= current.offset:
                    return
        elif last is not None:
            await self._reset(channel, pub.epoch, pub.offset)
            return
        await self._deliver(pub)

    async def _repair(self, channel: str, last: StreamPosition) -> bool:
        """Deliver what is missing after ``last`` from the stream; reset if it cannot."""
        try:
            history = await self._read(channel, since=last)
        except UnrecoverablePosition:
            top = await self.history(channel, limit=0)
            await self._reset(channel, top.position.epoch, top.position.offset)
            return False
        for pub in history.publications:
            current = self._positions.get(channel)
            if current is not None and current.epoch == pub.epoch and pub.offset <= current.offset:
                continue
            await self._deliver(pub)
        return True

    async def _catch_up(self) -> None:
        for channel in sorted(self._channel_of(key) for key in self._subscriber.keys):
            last = self._positions.get(channel)
            if last is None:
                self._positions[channel] = (await self.history(channel, limit=0)).position
            else:
                await self._repair(channel, last)

    async def _reset(self, channel: str, epoch: str, offset: int) -> None:
        log.warning("stream of %s cannot be continued; resetting its subscribers", channel)
        self._positions[channel] = StreamPosition(epoch, offset)
        if self._on_reset is not None:
            await self._on_reset(channel)

    async def _deliver(self, pub: Publication) -> None:
        self._positions[pub.channel] = StreamPosition(pub.epoch, pub.offset)
        try:
            await self._handler(pub)
        except Exception:
            log.exception("publication handler failed for %s#%d", pub.channel, pub.offset)
