"""The realtime client: one supervised connection, automatic reconnect and recovery."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from client_sdk._connection import Connection
from client_sdk._connector import Connector, Serializer, TokenProvider
from client_sdk._docs import DOC_EVENTS, DocsWatcher
from client_sdk._errors import (
    ClientClosed,
    RequestTimeout,
    TandemError,
    checked_ack,
    error_class,
)
from client_sdk._flights import FlightWatcher
from client_sdk._job_watch import JobWatcher
from client_sdk._models import Message, Notice, Position, Presence, PublishResult
from client_sdk._notifications import NotificationWatcher
from client_sdk._retry import backoff_delay
from client_sdk._status import Status, StatusReporter
from client_sdk._subscription import Subscription
from client_sdk._subscriptions import SubscriptionSet

log = logging.getLogger("client_sdk")

NoticeCallback = Callable[[Notice], object]


class Client:
    """A realtime client: subscribe to channels and publish, surviving disconnects.

    The client keeps one connection and reconnects on its own (exponential backoff with full
    jitter, honouring the server's ``retry_after_ms``). After each reconnect it re-subscribes
    every active subscription from the last position it received (in ``subscribe_many``
    requests of up to 100 channels), so subscribers see every publication exactly once and in
    order, or a `Resync` when that is no longer possible.

    Example:
        >>> async with Client(url, token=token) as client:
        ...     async with client.subscribe("room:lobby") as sub:
        ...         async for item in sub:
        ...             print(item)

    Args:
        url: The server's base URL, for example ``"http://127.0.0.1:8000"``.
        token: A JWT, or a (sync or async) callable returning one. A callable is asked again
            when the server says the token expired; with a plain string the client gives up.
        transports: Engine.IO transports to use; ``None`` for polling with upgrade.
        serializer: ``"json"`` or ``"msgpack"``; must match the server.
        socketio_path: The Socket.IO endpoint path.
        headers: Extra HTTP headers for the connection request.
        request_timeout: Seconds to wait for a connection and an ack before `RequestTimeout`.
        connect_timeout: Seconds one connection attempt may take.
        reconnect_delay: Backoff base for reconnect attempts, in seconds.
        reconnect_delay_max: Backoff cap, in seconds.
        max_queue: Items a subscription buffers for a slow reader before it resynchronises.

    Attributes:
        jobs: Watch jobs (`JobWatcher`): ``await client.jobs.wait(job_id)`` or
            ``async for job in client.jobs.watch(job_id)``.
        notifications: The user's inbox (`NotificationWatcher`):
            ``async with client.notifications.inbox() as inbox`` (``inbox.unread``).
        flights: Follow flights (`FlightWatcher`): ``client.flights.watch(flight_id)``.
        docs: Collaborative documents (`DocsWatcher`):
            ``async with client.docs.open("doc:notes-1") as doc`` yields a live pycrdt
            ``Doc`` (`LiveDoc`), re-joined after every reconnect.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | TokenProvider | None = None,
        transports: Sequence[str] | None = ("websocket",),
        serializer: Serializer = "json",
        socketio_path: str = "socket.io",
        headers: Mapping[str, str] | None = None,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 5.0,
        max_queue: int = 10_000,
    ) -> None:
        if serializer not in ("json", "msgpack"):
            raise ValueError(f"serializer must be 'json' or 'msgpack', not {serializer!r}")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url
        self._request_timeout = request_timeout
        self._reconnect_delay = reconnect_delay
        self._reconnect_delay_max = reconnect_delay_max
        self._max_queue = max_queue
        self._conn: Connection | None = None
        self._changed = asyncio.Event()
        self._subscriptions = SubscriptionSet(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._notice_callbacks: list[NoticeCallback] = []
        self._closed = False
        self._fatal: TandemError | None = None
        self.jobs = JobWatcher(self)
        self.notifications = NotificationWatcher(self)
        self.flights = FlightWatcher(self)
        self.docs = DocsWatcher(self)
        self._status = StatusReporter(self._call)
        self._connector = Connector(
            url,
            token=token,
            transports=transports,
            serializer=serializer,
            socketio_path=socketio_path,
            headers=headers,
            connect_timeout=connect_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_delay_max=reconnect_delay_max,
            on_event=self._dispatch,
            on_notice=self._notify,
            status=lambda: self._status.status,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a connection to the server is up."""
        return self._conn is not None and self._conn.connected

    @property
    def error(self) -> TandemError | None:
        """Why the client stopped reconnecting (for example `Unauthorized`), if it did."""
        return self._fatal

    async def connect(self) -> None:
        """Open the first connection; from then on the client reconnects by itself.

        Raises:
            Unauthorized: The token was refused.
            TokenExpired: The token had expired (and a provider's fresh one too).
            ConnectionLost: The server could not be reached.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._conn is not None:
            raise RuntimeError("connect() was already called")
        self._use(await self._connector.first())
        self._supervisor = asyncio.create_task(self._supervise(), name="tandem-client-supervisor")

    async def close(self) -> None:
        """Unsubscribe everything, disconnect and stop reconnecting. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._supervisor, *self._tasks) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._subscriptions.close()
        await self.docs._close(ClientClosed("the client is closed"))
        if self._conn is not None:
            await self._conn.close()
        self._changed.set()

    def on_notice(self, callback: NoticeCallback) -> NoticeCallback:
        """Call ``callback(notice)`` for every ``server.notice`` (usable as a decorator).

        The callback may be a plain function or a coroutine function; the client handles the
        notice (reconnecting when it says so) whatever the callback does.
        """
        self._notice_callbacks.append(callback)
        return callback

    # -- requests ---------------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        *,
        since: Position | tuple[str, int] | None = None,
        presence: bool = False,
    ) -> Subscription:
        """Create a subscription; enter it (``async with``) to subscribe.

        Args:
            channel: The channel name, for example ``"room:lobby"`` or ``"job:42"``.
            since: Resume after this position (from an earlier `Subscription.position`); the
                missed publications are replayed, or a `Resync` comes first.
            presence: Be a visible member of the channel (``doc:``, ``room:``, ``user:``) while
                subscribed; others receive ``presence.join`` / ``presence.leave``.

        Returns:
            The `Subscription`. Entering it raises the typed error when the server refuses
            (`PermissionDenied`, `UnknownChannel`, `InvalidPayload`, ...).
        """
        position = Position(*since) if since is not None else None
        return Subscription(
            self._subscriptions,
            channel,
            since=position,
            max_queue=self._max_queue,
            presence=presence,
        )

    async def presence(self, channel: str) -> Presence:
        """Who is on ``channel`` across the cluster (one member per user).

        Raises:
            PermissionDenied: The user may not subscribe to the channel.
            BadRequest: The channel kind keeps no presence.
        """
        return Presence.from_wire(await self._call("presence", {"channel": channel}))

    async def set_status(self, status: Status) -> str:
        """Report this client's status: ``"online"``, ``"away"`` (idle) or ``"busy"``.

        Every reconnect starts with it, so the others see no flapping. They see the user's
        combined status (busy if any connection says so, else online if any is active, else
        away) in presence members and ``presence.update`` events, on the channels where the
        user is a presence member and on their own ``user:<id>`` channel.

        Returns:
            The user's combined status across all their connections.

        Raises:
            ValueError: Not one of the three statuses.
            RateLimited: Too many status or typing requests on this connection.
        """
        return await self._status.set_status(status)

    async def typing(self, channel: str, typing: bool = True) -> None:
        """Tell ``channel`` (a subscribed ``doc:`` or ``room:``) that the user types, or stopped.

        Subscribers receive ``presence.typing`` ``{user, name, typing}``. The server clears it
        after 5 s without renewal, or when this connection goes; renew every 2 s or so while
        the user types, or use `keep_typing`.

        Raises:
            BadRequest: Not subscribed to ``channel``, or not a ``doc:``/``room:`` channel.
            RateLimited: Too many status or typing requests on this connection.
        """
        await self._status.typing(channel, typing)

    def keep_typing(self, channel: str, *, every: float = 2.0) -> AbstractAsyncContextManager[None]:
        """``async with client.keep_typing(channel):`` typing, renewed every ``every`` seconds,
        then stopped."""
        return self._status.keep_typing(channel, every)

    async def publish(
        self, channel: str, event: str, data: Any = None, *, id: str | None = None
    ) -> PublishResult:
        """Publish an event to a channel that accepts client publications.

        Args:
            channel: The channel name.
            event: The event type, for example ``"chat.message"``.
            data: The payload (anything the serializer can encode).
            id: An idempotency key: publishing again with the same ``id`` returns the original
                offset with ``duplicate=True``, so retrying after `ConnectionLost` is safe.

        Returns:
            The `PublishResult`.

        Raises:
            PermissionDenied: The channel or event type is not open to this user.
            InvalidPayload: The event name or payload is malformed.
            RequestTimeout: No ack within ``request_timeout``.
        """
        payload: dict[str, Any] = {"channel": channel, "event": event, "data": data}
        if id is not None:
            payload["id"] = id
        ack = await self._call("publish", payload)
        return PublishResult.from_wire(ack)

    async def _call(self, event: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            async with asyncio.timeout(self._request_timeout):
                conn = await self._wait_connection()
                ack = await conn.request(event, payload)
        except TimeoutError:
            raise RequestTimeout(f"no reply to {event!r} within {self._request_timeout}s") from None
        return checked_ack(ack)

    async def _request(
        self, conn: Connection, event: str, payload: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """One request on ``conn`` (not on whichever connection comes next), with a timeout."""
        try:
            async with asyncio.timeout(self._request_timeout):
                ack = await conn.request(event, payload)
        except TimeoutError:
            raise RequestTimeout(f"no reply to {event!r} within {self._request_timeout}s") from None
        return checked_ack(ack)

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client is closed")

    async def _wait_connection(self) -> Connection:
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise ClientClosed("the client is closed")
            conn = self._conn
            if conn is not None and conn.connected:
                return conn
            self._changed.clear()
            await self._changed.wait()

    # -- connections ------------------------------------------------------------------------

    async def _fetch_token(self) -> str | None:
        return await self._connector.fetch_token()

    def _use(self, conn: Connection) -> None:
        self._conn = conn
        self._changed.set()

    async def _supervise(self) -> None:
        try:
            while True:
                conn = self._conn
                assert conn is not None
                await conn.closed.wait()
                self._changed.set()
                self.docs._on_disconnect()
                await conn.close()  # releases the transport's HTTP session
                self._use(new := await self._connector.reconnect(conn.notice))
                self._subscriptions.restore(new)
                self.docs._on_reconnect()
        except TandemError as exc:
            log.warning("not reconnecting: %s", exc)
            self._fatal = exc
            self._subscriptions.fail(exc)
            self.docs._fail(exc)
            self._changed.set()

    def _notify(self, notice: Notice) -> None:
        log.info("server notice: %s (%s)", notice.code, notice.message)
        sub = self._subscriptions.get(notice.channel) if notice.channel is not None else None
        if sub is not None:  # the server ended it: not resubscribed after a reconnect
            self._subscriptions.drop(
                sub, error_class(notice.code)(notice.message, code=notice.code)
            )
        for callback in self._notice_callbacks:
            try:
                result = callback(notice)
                if inspect.iscoroutine(result):
                    self._spawn(result)
            except Exception:
                log.exception("notice callback failed")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- subscriptions ----------------------------------------------------------------------

    def _dispatch(self, event: str, envelope: Mapping[str, Any]) -> None:
        if event in DOC_EVENTS:
            self.docs._on_event(event, envelope)
            return
        try:
            msg = Message.from_envelope(envelope)
        except ValueError:
            log.warning("ignoring malformed %r event", event)
            return
        self._subscriptions.deliver(msg)

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(
            backoff_delay(attempt, self._reconnect_delay, self._reconnect_delay_max)
        )
