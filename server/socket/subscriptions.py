"""Subscribing: one channel or many in one request, with recovery from a position, state and
presence, under one subscription budget; unsubscribing.

A subscribe *joins* a channel (authorization, the channel limit, the hub's join buffer, history
from ``since``, state, presence) and then *commits* it: the channel goes live and the ack is
answered in one synchronous step, so its live publications always come after the ack that
gives its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from domain.errors import (
    BadRequest,
    InvalidPayload,
    PermissionDenied,
    RateLimited,
    Unavailable,
    UnknownChannel,
)
from realtime.broker import Broker, History, StreamPosition, UnrecoverablePosition as Unrecoverable
from realtime.channels import Channel, Namespaces
from realtime.hub import Hub, JoinOverflow
from realtime.presence_tracker import PresenceTracker
from realtime.ratelimit import TokenBucket
from server.auth.authz import Authorizer
from server.config import Settings
from server.errors import domain_error_ack
from server.metrics import Metrics
from server.payloads import (
    MAX_SUBSCRIBE_BATCH,
    SubscribeManyRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from server.socket.channel_state import ChannelState
from server.socket.connections import Connection
from server.socket.presence import PresenceEdge, no_presence_message
from server.socket.requests import Ack, Requests


class Subscriptions:
    def __init__(
        self,
        *,
        connections: dict[str, Connection],
        requests: Requests,
        settings: Settings,
        namespaces: Namespaces,
        broker: Broker,
        hub: Hub,
        presence: PresenceTracker,
        presence_edge: PresenceEdge,
        authorizer: Authorizer,
        state: ChannelState,
        metrics: Metrics,
    ) -> None:
        self._connections = connections
        self._requests = requests
        self._settings = settings
        self._namespaces = namespaces
        self._broker = broker
        self._hub = hub
        self._presence = presence
        self._edge = presence_edge
        self.authorizer = authorizer
        self._state = state
        self._metrics = metrics
        self._joins: dict[tuple[str, str], _Join] = {}

    async def subscribe_one(self, conn: Connection, req: SubscribeRequest) -> Ack:
        """The ``subscribe`` request: one channel of the subscription budget."""
        self.charge_subscriptions(conn, 1)
        self._metrics.subscribe_requests.labels("single").inc()
        return await self.subscribe(conn, req)

    async def subscribe_many(self, conn: Connection, req: SubscribeManyRequest) -> Ack:
        """The ``subscribe_many`` request: each item is joined as a ``subscribe`` of its own
        would be, in order, and the ack lists each one's ack (or error ack).

        Names that are not channels or come twice, and a batch the subscription budget cannot
        cover, refuse the whole batch before anything changes; what depends on the channel
        (permission, the channel limit, presence) is answered per item. The channels go live
        together, right before the ack: as with ``subscribe``, a channel's live publications
        come after the ack that gives its position.
        """
        first: dict[str, int] = {}
        for i, item in enumerate(req.subscriptions):
            try:
                name = str(self._namespaces.parse(item.channel))
            except (InvalidPayload, UnknownChannel) as exc:
                raise type(exc)(f"subscriptions.{i}.channel: {exc.message}") from None
            if name in first:
                raise InvalidPayload(
                    f"subscriptions.{i}.channel: {name} is subscriptions.{first[name]} again; "
                    "ask for each channel once"
                )
            first[name] = i
        self.charge_subscriptions(conn, len(req.subscriptions))
        self._metrics.subscribe_requests.labels("batch").inc()
        what = SubscribeRequest.__name__
        async with self._queued(conn.sid, first):
            joins: list[_Joining | Ack] = []
            for item in req.subscriptions:
                if self._connections.get(conn.sid) is not conn:
                    break  # gone meanwhile
                joins.append(await self._requests.answer(what, self._join(conn, item)))
            if len(joins) < len(req.subscriptions):
                for left in joins:
                    if isinstance(left, _Joining):
                        await self.leave(conn.sid, left.channel)
                return {"ok": False}  # nobody reads it
            # From the first commit to the ack, nothing awaits: no publication of a channel
            # goes out before the ack (but after an overflow, whose leave must be awaited).
            results: list[Ack] = []
            overflowed: list[Channel] = []
            for join in joins:
                if not isinstance(join, _Joining):
                    results.append(join)
                    continue
                try:
                    results.append(self._commit(conn, join))
                except JoinOverflow as exc:
                    overflowed.append(join.channel)
                    results.append(self._requests.error(domain_error_ack(Unavailable(str(exc)))))
            for channel in overflowed:
                await self.leave(conn.sid, channel)
        return {"ok": True, "results": results}

    def charge_subscriptions(self, conn: Connection, count: int) -> None:
        """Spend ``count`` channels of the connection's subscription budget, or raise
        RateLimited (spending nothing).

        One budget for subscribing, in either form: every channel asked for, in a
        ``subscribe`` or in a ``subscribe_many``, costs one token. The budget refills at the
        general request rate (TANDEM_CLIENT_RATE_PER_S) and holds a whole connection's worth
        of channels (TANDEM_MAX_CHANNELS_PER_CONNECTION, and one full batch at least). A new
        connection starts with it full, so a client that reconnects restores everything it
        may hold at once; over time neither form subscribes faster than the rate. (A
        ``subscribe_many`` also costs one request of the general limit, a ``subscribe`` one
        each, as before.)
        """
        bucket = conn.subscribe_bucket
        if bucket is None:
            settings = self._settings
            burst = max(settings.max_channels_per_connection, MAX_SUBSCRIBE_BATCH)
            bucket = conn.subscribe_bucket = TokenBucket(settings.client_rate_per_s, burst)
        if not bucket.take(count):
            wait = bucket.wait_s(count)
            raise RateLimited(
                f"too many subscriptions: {count} more would pass in {wait:.1f} s",
                retry_after_s=max(1, math.ceil(wait)),
            )

    async def subscribe(self, conn: Connection, req: SubscribeRequest) -> Ack:
        """Subscribe ``conn`` to one channel: join it, then make it live with the ack."""
        async with self._queued(conn.sid, [str(req.channel)]):
            join = await self._join(conn, req)
            try:
                return self._commit(conn, join)
            except JoinOverflow as exc:
                await self.leave(conn.sid, join.channel)
                raise Unavailable(str(exc)) from None

    @contextlib.asynccontextmanager
    async def _queued(self, sid: str, channels: Iterable[str]) -> AsyncIterator[None]:
        """Concurrent subscribes of one connection to one channel queue: the hub keeps one
        join buffer per connection and channel, and a state read may await the database.
        A batch takes its channels' turns in name order, so two never wait for each other."""
        async with contextlib.AsyncExitStack() as stack:
            for name in sorted(channels):
                key = (sid, name)
                join = self._joins.setdefault(key, _Join())
                join.waiting += 1
                stack.callback(self._unqueue, key, join)
                await stack.enter_async_context(join.lock)
            yield

    def _unqueue(self, key: tuple[str, str], join: _Join) -> None:
        join.waiting -= 1
        if not join.waiting:
            self._joins.pop(key, None)

    async def _join(self, conn: Connection, req: SubscribeRequest) -> _Joining:
        """Everything a subscribe does before the channel goes live: authorization, the
        channel limit, the join buffer, history (recovery from ``since``), state, presence.
        On failure the channel is left (nothing of the subscribe remains)."""
        channel = self._namespaces.parse(req.channel)
        if not await self.authorizer.can_subscribe(conn.principal, channel):
            raise PermissionDenied(f"not allowed to subscribe to {channel}")
        if req.presence and not channel.policy.presence:
            raise BadRequest(no_presence_message(channel, self._namespaces))
        name, sid, hub = str(channel), conn.sid, self._hub
        fresh = not hub.is_subscribed(sid, name)
        if fresh and len(hub.channels_of(sid)) >= self._settings.max_channels_per_connection:
            raise BadRequest(
                f"a connection may hold {self._settings.max_channels_per_connection} channels"
            )
        await hub.begin(sid, name)
        try:
            recovered, history = False, None
            if req.since is not None:
                since = StreamPosition(req.since.epoch, req.since.offset)
                try:
                    history = await self._broker.history(
                        name, since=since, limit=self._settings.recovery_max_publications
                    )
                    recovered = True
                except Unrecoverable:
                    pass
                self._metrics.recoveries.labels("recovered" if recovered else "unrecoverable").inc()
            if history is None:
                history = await self._broker.history(name, limit=0)
                if req.since is not None and req.since.epoch != history.position.epoch:
                    history = await self._new_stream(name, history)
            # State is read after the position: a publication in between may show in both
            # (clients skip stale versions) but can never be missed.
            state = await self._state(channel)
            if req.presence:
                # Before commit: the subscriber's own presence.join is in its ack or after it.
                principal = conn.principal
                await self._presence.join(name, sid, principal.sub, principal.name)
            elif name in self._presence.channels_of(sid):
                await self._presence.leave(name, sid)  # re-subscribed without presence
        except BaseException:
            await self.leave(sid, channel)
            raise
        return _Joining(channel, fresh, recovered, history, state)

    def _commit(self, conn: Connection, join: _Joining) -> Ack:
        """Make a joined channel live and answer its ack. Synchronous: the ack leaves before
        any live publication of the channel. Raises JoinOverflow (the channel must be left)."""
        name = str(join.channel)
        newer, position = self._hub.commit(conn.sid, name, join.history.position)
        if join.fresh:
            self._metrics.subscriptions.inc()
        publications = [*join.history.publications, *newer]
        return {
            "ok": True,
            "channel": name,
            "epoch": position.epoch,
            "offset": position.offset,
            "recovered": join.recovered,
            "publications": [pub.envelope() for pub in publications],
            "state": join.state,
        }

    async def _new_stream(self, channel: str, top: History) -> History:
        """A subscriber whose stream is gone (Redis lost it) has seen nothing of the one there
        is now: it gets all of that stream, from its first publication, if that is still
        retained (``recovered`` stays false: the old stream's tail is unknown). Publications
        made before this node's listener came back reach it so; otherwise just the top."""
        try:
            return await self._broker.history(
                channel,
                since=StreamPosition(top.position.epoch, 0),
                limit=self._settings.recovery_max_publications,
            )
        except Unrecoverable:
            return top

    async def unsubscribe(self, conn: Connection, req: UnsubscribeRequest) -> Ack:
        channel = self._namespaces.parse(req.channel)
        if self._hub.is_subscribed(conn.sid, str(channel)):
            await self.leave(conn.sid, channel)
            self._metrics.subscriptions.dec()
        return {"ok": True}

    async def leave(self, sid: str, channel: Channel) -> None:
        await self._hub.leave(sid, str(channel))
        await self._edge.unsubscribed(sid, channel)


@dataclass(frozen=True, slots=True)
class _Joining:
    """A subscribe joined but not yet live (between the hub's begin and commit)."""

    channel: Channel
    fresh: bool  # not held before: the subscriptions gauge counts it at commit
    recovered: bool
    history: History
    state: Any


class _Join:
    """The queue of one connection's subscribes to one channel."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
