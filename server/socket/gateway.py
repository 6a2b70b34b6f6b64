"""The Socket.IO edge: connections (connect, disconnect, kicks, the drain) and the requests
they make: subscribing (``server.socket.subscriptions``), publishing, presence, status and
typing. Each request goes through ``server.socket.requests`` (rate limits, validation, errors
as acks); handlers are thin: parse the payload, check the caller, call the broker or hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from domain.errors import (
    DomainError,
    ErrorCode,
    PermissionDenied,
)
from realtime.broker import (
    Broker,
)
from realtime.channels import Channel, Namespaces
from realtime.hub import Hub
from realtime.presence_tracker import PresenceTracker
from realtime.ratelimit import TokenBucket
from server.auth.authz import Authorizer
from server.auth.tokens import TokenVerifier
from server.config import Settings
from server.correlation import bind, unbind, valid_request_id
from server.errors import error_body
from server.metrics import Metrics
from server.namespaces import check_payload, socket_payload_limit
from server.payloads import (
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
from server.socket.presence import PresenceEdge, read_presence
from server.socket.requests import Requests
from server.socket.subscriptions import Subscriptions
from server.transport.sockets import ConnectionRefused, SocketServer

log = logging.getLogger(__name__)

Ack = dict[str, Any]
NOTICE_EVENT = "server.notice"


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
        self._verifier = verifier
        self._metrics = metrics
        self._connections: dict[str, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = Requests(self._connections, metrics)
        # The Socket.IO handler for a request model and its function (the documents' too).
        self.request = self.requests.handler
        self.subscriptions = Subscriptions(
            connections=self._connections,
            requests=self.requests,
            settings=settings,
            namespaces=namespaces,
            broker=broker,
            hub=hub,
            presence=presence,
            presence_edge=presence_edge,
            authorizer=authorizer,
            state=state,
            metrics=metrics,
        )
        self.draining = False
        # Told of every connection that ends (the document engine drops its memberships).
        self.on_gone: Callable[[str], Awaitable[None]] | None = None
        # Told of every client the server disconnects (with the user, code and message): the
        # admin console's slow consumers (its recent errors: ``requests.on_error``).
        self.on_kick: Callable[[str, str, ErrorCode, str], None] | None = None

    def register(self) -> None:
        sio = self._sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        subs = self.subscriptions
        sio.on("subscribe", self.request(SubscribeRequest, subs.subscribe_one))
        sio.on("subscribe_many", self.request(SubscribeManyRequest, subs.subscribe_many))
        sio.on("unsubscribe", self.request(UnsubscribeRequest, subs.unsubscribe))
        sio.on("publish", self.request(PublishRequest, self.publish))
        sio.on("presence", self.request(PresenceRequest, self.presence))
        sio.on("status", self.request(StatusRequest, self._edge.status, limit=_presence_bucket))
        sio.on("typing", self.request(TypingRequest, self.typing, limit=_presence_bucket))
        sio.on("*", self.requests.unknown_event)
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
            await self.subscriptions.leave(sid, channel)
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
        # New handshakes are refused at the transport (503): a client that reconnects at once
        # opens no session here, and none holds a long-poll that shutdown would wait for.
        self._sio.engine.stop_accepting()
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
        # What is left never showed a token (or was refused): nothing to tell it.
        self._sio.engine.close_all("server shutdown")
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
