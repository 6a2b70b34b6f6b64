"""The Socket.IO edge: connect/disconnect, and the subscribe/unsubscribe/publish/presence/
status/typing requests.

Handlers are thin: parse the payload, check the caller, call the broker or hub, map errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from domain.errors import (
    BadRequest,
    DomainError,
    ErrorCode,
    InvalidPayload,
    PermissionDenied,
    RateLimited,
    Unavailable,
    UnknownChannel,
)
from realtime.broker import (
    Broker,
    BrokerUnavailable,
    History,
    StreamPosition,
    UnrecoverablePosition as Unrecoverable,
)
from realtime.channels import Channel, Namespaces
from realtime.hub import Hub, JoinOverflow
from realtime.presence_tracker import PresenceTracker
from realtime.ratelimit import TokenBucket
from server.auth.authz import Authorizer
from server.auth.tokens import TokenVerifier
from server.config import Settings
from server.correlation import bind, unbind, valid_request_id
from server.errors import domain_error_ack, error_ack, error_body, validation_message
from server.metrics import Metrics
from server.namespaces import check_payload, socket_payload_limit
from server.payloads import (
    MAX_SUBSCRIBE_BATCH,
    SERVER_EVENT_PREFIXES,
    PresenceRequest,
    PublishRequest,
    StatusRequest,
    SubscribeManyRequest,
    SubscribeRequest,
    TypingRequest,
    UnsubscribeRequest,
)
from server.socket.channel_state import ChannelState
from server.socket.connections import Connection
from server.socket.presence import PresenceEdge, no_presence_message, read_presence
from server.transport.sockets import ConnectionRefused, SocketServer

log = logging.getLogger(__name__)

Ack = dict[str, Any]
NOTICE_EVENT = "server.notice"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class SocketGateway:
    def __init__(
        self,
        *,
        sio: SocketServer,
        settings: Settings,
        namespaces: Namespaces,
        broker: Broker,
        hub: Hub,
        presence: PresenceTracker,
        presence_edge: PresenceEdge,
        authorizer: Authorizer,
        state: ChannelState,
        verifier: TokenVerifier,
        metrics: Metrics,
    ) -> None:
        self._sio = sio
        self._settings = settings
        self.namespaces = self._namespaces = namespaces
        self._event_limit = socket_payload_limit(settings, namespaces)
        self._broker = broker
        self._hub = hub
        self._presence = presence
        self._edge = presence_edge
        self.authorizer = authorizer
        self._state = state
        self._verifier = verifier
        self._metrics = metrics
        self._connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._joins: dict[tuple[str, str], _Join] = {}
        self.draining = False
        # Told of every connection that ends (the document engine drops its memberships).
        self.on_gone: Callable[[str], Awaitable[None]] | None = None
        # Told of every error answered and every client the server disconnects (with the
        # user, code and message): the admin console's recent errors and slow consumers.
        self.on_error: Callable[[str, str], None] | None = None
        self.on_kick: Callable[[str, str, ErrorCode, str], None] | None = None

    def register(self) -> None:
        sio = self._sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        sio.on("subscribe", self.request(SubscribeRequest, self.subscribe_one))
        sio.on("subscribe_many", self.request(SubscribeManyRequest, self.subscribe_many))
        sio.on("unsubscribe", self.request(UnsubscribeRequest, self.unsubscribe))
        sio.on("publish", self.request(PublishRequest, self.publish))
        sio.on("presence", self.request(PresenceRequest, self.presence))
        sio.on("status", self.request(StatusRequest, self._edge.status, limit=_presence_bucket))
        sio.on("typing", self.request(TypingRequest, self.typing, limit=_presence_bucket))
        sio.on("*", self.on_unknown_event)
        sio.on_abuse = self.on_abuse
        self._hub.resync = self.resync

    # -- connection lifecycle -------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        # The handshake's X-Request-ID (a proxy's, say) names the connection's lines: the
        # CONNECT packet itself may arrive in a later long-polling request without it.
        handshake = valid_request_id(environ.get("HTTP_X_REQUEST_ID"))
        fields = {"request_id": handshake} if handshake else {}
        token = bind(connection=sid, **fields)
        try:
            await self._connect(sid, auth, _client_of(environ))
        finally:
            unbind(token)

    async def _connect(self, sid: str, auth: Any, client: tuple[str, str]) -> None:
        if self.draining:
            self._refuse(
                "shutdown",
                error_body(ErrorCode.SHUTDOWN, "server is restarting", retryable=True),
            )
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = self._verifier.verify(token)
        except DomainError as exc:
            self._refuse(exc.code, error_body(exc.code, exc.message))
        settings = self._settings
        conn = Connection(
            sid=sid,
            principal=principal,
            bucket=TokenBucket(settings.client_rate_per_s, settings.client_burst),
            presence_bucket=TokenBucket(settings.presence_rate_per_s, settings.presence_burst),
            transport=self._sio.transport(sid),
            address=client[0],
            user_agent=client[1],
        )
        if principal.expires_at is not None:
            delay = max(0.0, principal.expires_at - time.time())
            conn.expiry = asyncio.get_running_loop().call_later(delay, self._on_expired, sid)
        self._connections[sid] = conn
        await self._edge.connected(conn, auth.get("status") if isinstance(auth, dict) else None)
        self._metrics.connects.labels("accepted").inc()
        self._metrics.connections.set(len(self._connections))

    def _refuse(self, code: str, body: dict[str, Any]) -> None:
        self._metrics.connects.labels(code).inc()
        log.info("connection refused: %s (%s)", code, body["message"])
        # The JS client shows `message`; `data` carries our {code, message, retryable}.
        raise ConnectionRefused(body["message"], body)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self._connections.pop(sid, None)
        if conn is None:
            return
        conn.close()
        subscribed = len(self._hub.channels_of(sid))
        if self.on_gone is not None:
            await self.on_gone(sid)
        await self._hub.leave_all(sid)
        # Draining: the node takes its presence out at once anyway.
        await self._edge.disconnected(sid, at_once=self.draining)
        self._metrics.subscriptions.dec(subscribed)
        self._metrics.connections.set(len(self._connections))
        self._metrics.disconnects.labels(str(reason or "unknown")).inc()

    def local_connections(self) -> list[Connection]:
        """This node's connections (for the admin API)."""
        return list(self._connections.values())

    def channel_count(self) -> int:
        return self._hub.channel_count

    def channels_of(self, sid: str) -> frozenset[str]:
        return self._hub.channels_of(sid)

    def transport_of(self, sid: str) -> str:
        """The transport now: a polling connection may have upgraded since it connected."""
        try:
            return str(self._sio.transport(sid))
        except Exception:  # gone meanwhile
            return "unknown"

    async def end_subscription(
        self, sid: str, channel: Channel, code: ErrorCode, message: str
    ) -> bool:
        """Tell the client (a ``server.notice`` naming the channel), then end its
        subscription to ``channel``; False when it had none."""
        name = str(channel)
        if not self._hub.is_subscribed(sid, name):
            return False
        notice = {"code": code.value, "message": message, "reconnect": True, "channel": name}
        try:
            await self._sio.emit(NOTICE_EVENT, notice, to=sid)
        except Exception:  # the transport may already be gone; unsubscribe all the same
            log.debug("could not notify %s before unsubscribing", sid, exc_info=True)
        if self._hub.is_subscribed(sid, name):
            await self._leave(sid, channel)
            self._metrics.subscriptions.dec()
        return True

    def _on_expired(self, sid: str) -> None:
        self._spawn(self.kick(sid, ErrorCode.TOKEN_EXPIRED, "token expired", reconnect=True))

    async def kick(
        self, sid: str, code: ErrorCode, message: str, *, reconnect: bool, retry_after_ms: int = 0
    ) -> None:
        """Tell the client why (``server.notice``), then disconnect it."""
        notice = {
            "code": code.value,
            "message": message,
            "reconnect": reconnect,
            "retry_after_ms": retry_after_ms,
        }
        self._metrics.disconnects.labels(code.value).inc()
        conn = self._connections.get(sid)
        if self.on_kick is not None:
            self.on_kick(sid, conn.principal.sub if conn else "", code, message)
        token = bind(connection=sid, user=conn.principal.sub if conn else "")
        try:
            # A drain says it once for every client; the node logs that it drains.
            if code is not ErrorCode.SHUTDOWN:
                log.info("disconnecting: %s (%s)", code.value, message)
            await self._sio.emit(NOTICE_EVENT, notice, to=sid)
            await self._sio.disconnect(sid)
        except Exception:  # the transport may already be gone
            log.debug("could not notify %s before disconnecting", sid, exc_info=True)
        finally:
            unbind(token)

    async def on_abuse(self, eio_sid: str) -> None:
        """Too many malformed packets: stop talking to this client."""
        sid = self._sio.sid_of(eio_sid)
        if sid is not None:
            await self.kick(
                sid, ErrorCode.BAD_REQUEST, "too many malformed packets", reconnect=False
            )
        self._sio.close_transport(eio_sid)

    async def drain(self, retry_after_ms: int = 1000) -> None:
        """Refuse new connections, tell every client to reconnect elsewhere, and take this
        node's presence entries out at once (their leaves are published)."""
        self.draining = True
        log.info("draining: %d clients told to reconnect elsewhere", len(self._connections))
        await asyncio.gather(
            *(
                self.kick(
                    sid,
                    ErrorCode.SHUTDOWN,
                    "server is restarting",
                    reconnect=True,
                    retry_after_ms=retry_after_ms,
                )
                for sid in list(self._connections)
            )
        )
        await self._edge.leave_node()

    async def resync(self, channel: str, sids: Collection[str]) -> None:
        """A channel's stream broke (Redis lost it while we were cut off): like Centrifugo's
        ``insufficient_state``, its subscribers reconnect, resubscribe with their position and
        get the missed publications or ``recovered: false`` with the state."""
        message = f"the stream of {channel} was interrupted; resubscribe with your position"
        await asyncio.gather(
            *(self.kick(sid, ErrorCode.INSUFFICIENT_STATE, message, reconnect=True) for sid in sids)
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        model: type[M],
        handler: Callable[[Connection, M], Awaitable[Ack]],
        *,
        limit: Callable[[Connection], TokenBucket] | None = None,
        general: bool = True,
    ) -> Callable[..., Awaitable[Ack]]:
        """A Socket.IO handler for ``handler``: rate limits (the connection's general one
        unless ``general`` is False, and ``limit``'s), payload validation with ``model``, and
        every error mapped to an ack."""

        async def run(sid: str, *args: Any) -> Ack:
            conn = self._connections.get(sid)
            if conn is None:
                return self._error(error_ack(ErrorCode.UNAUTHORIZED, "not connected"))
            if general and not conn.bucket.take():
                return self._error(
                    error_ack(ErrorCode.RATE_LIMITED, "too many requests", retryable=True)
                )
            if limit is not None and not limit(conn).take():
                return self._error(
                    error_ack(
                        ErrorCode.RATE_LIMITED,
                        f"too many {model.__name__.removesuffix('Request').lower()} requests",
                        retryable=True,
                    )
                )
            if len(args) != 1 or not isinstance(args[0], dict):
                return self._error(
                    error_ack(ErrorCode.INVALID_PAYLOAD, "send exactly one object as payload")
                )
            try:
                request = model.model_validate(args[0])
            except ValidationError as exc:
                return self._error(error_ack(ErrorCode.INVALID_PAYLOAD, validation_message(exc)))
            token = bind(connection=sid, user=conn.principal.sub)
            try:
                return await self._answer(model.__name__, handler(conn, request))
            finally:
                unbind(token)

        return run

    async def _answer(self, name: str, call: Awaitable[T]) -> T | Ack:
        """``call``'s ack, or the error ack of what it raised (``name``: the request's)."""
        try:
            return await call
        except DomainError as exc:
            return self._error(domain_error_ack(exc))
        except BrokerUnavailable:
            self._metrics.broker_errors.labels(name).inc()
            return self._error(domain_error_ack(Unavailable("broker unavailable; retry")))
        except Exception:
            log.exception("%s failed", name)
            return self._error(
                error_ack(ErrorCode.INTERNAL, "internal error; retry", retryable=True)
            )

    def _error(self, ack: Ack) -> Ack:
        self._metrics.request_errors.labels(ack["error"]["code"]).inc()
        if self.on_error is not None:
            self.on_error(ack["error"]["code"], ack["error"]["message"])
        return ack

    async def on_unknown_event(self, event: str, sid: str, *args: Any) -> Ack:
        self._metrics.protocol_errors.labels("unknown_event").inc()
        return self._error(
            error_ack(
                ErrorCode.INVALID_PAYLOAD,
                f"unknown event {str(event)[:64]!r}; use subscribe, subscribe_many, unsubscribe, "
                "publish, presence, status, typing or doc.join, doc.update, doc.sync, "
                "doc.awareness, doc.leave",
            )
        )

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
                joins.append(await self._answer(what, self._join(conn, item)))
            if len(joins) < len(req.subscriptions):
                for left in joins:
                    if isinstance(left, _Joining):
                        await self._leave(conn.sid, left.channel)
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
                    results.append(self._error(domain_error_ack(Unavailable(str(exc)))))
            for channel in overflowed:
                await self._leave(conn.sid, channel)
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
                await self._leave(conn.sid, join.channel)
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
            await self._leave(sid, channel)
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
            await self._leave(conn.sid, channel)
            self._metrics.subscriptions.dec()
        return {"ok": True}

    async def _leave(self, sid: str, channel: Channel) -> None:
        await self._hub.leave(sid, str(channel))
        await self._edge.unsubscribed(sid, channel)

    async def presence(self, conn: Connection, req: PresenceRequest) -> Ack:
        limit = self._settings.presence_max_members
        channel = self._namespaces.parse(req.channel)
        view = await read_presence(
            self._presence, self.authorizer, conn.principal, channel, limit, self._namespaces
        )
        return {"ok": True, **view}

    async def typing(self, conn: Connection, req: TypingRequest) -> Ack:
        return await self._edge.typing(conn, req, self._namespaces.parse(req.channel))

    async def publish(self, conn: Connection, req: PublishRequest) -> Ack:
        channel = self._namespaces.parse(req.channel)
        if not await self.authorizer.can_publish(conn.principal, channel):
            raise PermissionDenied(f"not allowed to publish to {channel}")
        if req.event.startswith(SERVER_EVENT_PREFIXES):
            raise PermissionDenied(f"event type {req.event!r} is reserved for the server")
        check_payload(channel, req.data, self._event_limit)
        # Idempotency keys are scoped to the user, so one user cannot suppress another's.
        key = f"{conn.principal.sub}:{req.id}" if req.id is not None else None
        result = await self._broker.publish(str(channel), req.event, req.data, idempotency_key=key)
        if not result.duplicate:
            self._metrics.socket_publications.inc()
        return {
            "ok": True,
            "offset": result.offset,
            "epoch": result.epoch,
            "duplicate": result.duplicate,
        }


def _client_of(environ: dict[str, Any]) -> tuple[str, str]:
    """The client's address and user agent from the handshake, bounded in length."""
    address = environ.get("REMOTE_ADDR") or ""
    agent = environ.get("HTTP_USER_AGENT") or ""
    return str(address)[:64], str(agent)[:256]


def _presence_bucket(conn: Connection) -> TokenBucket:
    return conn.presence_bucket


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
