"""Notifications: send them over HTTP (``api.notifications``), follow an inbox live
(``client.notifications``)."""

from __future__ import annotations

import asyncio
import base64
import builtins
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from client_sdk._errors import error_class
from client_sdk._models import Message, Resync, optional_datetime
from client_sdk._subscription import Subscription

if TYPE_CHECKING:
    from client_sdk._http import ServerAPI

log = logging.getLogger("client_sdk")


@dataclass(frozen=True, slots=True)
class Notification:
    """One inbox entry, as the server stores it.

    Attributes:
        id: The notification id.
        user: Whose inbox it is in.
        type: ``info``, ``success``, ``warning``, ``error`` or ``action``.
        title: The headline.
        body: The text (may be empty).
        link: Where it points, if anywhere.
        data: Any JSON the sender attached.
        created_at: When it was created.
        read_at: When the user read it (``None`` while unread).
        delivered_at: When it first reached one of the user's connections.
    """

    id: str
    user: str
    type: str
    title: str
    body: str
    link: str | None
    data: Any
    created_at: datetime
    read_at: datetime | None
    delivered_at: datetime | None

    @property
    def unread(self) -> bool:
        return self.read_at is None

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> Notification:
        """Parse a notification (an event's ``data``, an inbox entry or an HTTP item).

        Raises:
            ValueError: If a field is missing or has the wrong type.
        """
        try:
            return cls(
                id=str(snapshot["id"]),
                user=str(snapshot["user"]),
                type=str(snapshot["type"]),
                title=str(snapshot["title"]),
                body=str(snapshot.get("body") or ""),
                link=snapshot.get("link"),
                data=snapshot.get("data"),
                created_at=datetime.fromisoformat(snapshot["created_at"]),
                read_at=optional_datetime(snapshot.get("read_at")),
                delivered_at=optional_datetime(snapshot.get("delivered_at")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed notification: {snapshot!r}") from exc


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """One page of an inbox, newest first; pass ``next_cursor`` for the next (None: last)."""

    notifications: list[Notification]
    next_cursor: str | None
    unread: int


class NotificationsAPI:
    """Notifications over HTTP (``ServerAPI.notifications``).

    `send` and `list` take an API key; `mark_read` acts on the caller's own inbox, so the
    `ServerAPI` must carry that user's token.
    """

    def __init__(self, api: ServerAPI) -> None:
        self._api = api

    async def send(
        self,
        user: str | Sequence[str],
        title: str,
        *,
        type: str = "info",
        body: str = "",
        link: str | None = None,
        data: Any = None,
        idempotency_key: str | None = None,
    ) -> builtins.list[Notification]:
        """Notify one user (a string) or several (a sequence); one notification each.

        Args:
            user: The recipient, or recipients.
            title: The headline (1 to 200 characters).
            type: ``info``, ``success``, ``warning``, ``error`` or ``action``.
            body: The text (at most 2000 characters).
            link: Where the notification points.
            data: Any JSON.
            idempotency_key: Retrying with the same key returns what the first call created
                and creates nothing; every retry of this call reuses it.

        Raises:
            InvalidPayload: A bad user id, type, title, body or link.
        """
        payload: dict[str, Any] = {"type": type, "title": title, "body": body, "data": data}
        payload.update({"user": user} if isinstance(user, str) else {"users": list(user)})
        if link is not None:
            payload["link"] = link
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = await self._api._request(
            "POST", "/api/notifications", json=payload, headers=headers
        )
        return [Notification.from_snapshot(item) for item in response["notifications"]]

    async def list(
        self,
        user: str | None = None,
        *,
        unread: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> NotificationPage:
        """A page of an inbox, newest first (``user`` is required with an API key)."""
        params: dict[str, str | int] = {"limit": limit}
        if user is not None:
            params["user"] = user
        if unread:
            params["unread"] = "true"
        if cursor is not None:
            params["cursor"] = cursor
        body = await self._api._request("GET", "/api/notifications", params=params)
        return NotificationPage(
            notifications=[Notification.from_snapshot(n) for n in body["notifications"]],
            next_cursor=body.get("next_cursor"),
            unread=int(body["unread"]),
        )

    async def mark_read(self, ids: Sequence[str] | None = None) -> int:
        """Mark ``ids`` (``None``: all) of the caller's notifications read; the unread count.

        Raises:
            NotFound: An id is not in the caller's inbox (nothing changes then).
        """
        payload: dict[str, Any] = {"all": True} if ids is None else {"ids": builtins.list(ids)}
        body = await self._api._request("POST", "/api/notifications/read", json=payload)
        return int(body["unread"])


class _Owner(Protocol):
    url: str

    def subscribe(self, channel: str) -> Subscription: ...

    async def _fetch_token(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class InboxUpdate:
    """What changed in an `Inbox`.

    Attributes:
        kind: ``"state"`` (the whole inbox, on subscribe or after a resync), ``"created"``
            or ``"read"``.
        unread: The unread count after it.
        notification: The new notification (``"created"``).
        read_ids: The ids that were read (``"read"``).
    """

    kind: Literal["state", "created", "read"]
    unread: int
    notification: Notification | None = None
    read_ids: tuple[str, ...] = ()


class NotificationWatcher:
    """Inboxes for a `Client` (``client.notifications``)."""

    def __init__(self, client: _Owner) -> None:
        self._client = client

    def inbox(self, user: str | None = None, *, keep: int = 50) -> Inbox:
        """Follow ``user:<user>`` (default: the token's ``sub``); use with ``async with``.

        Example:
            >>> async with client.notifications.inbox() as inbox:
            ...     print(inbox.unread, [n.title for n in inbox.latest])
            ...     async for update in inbox:
            ...         print(update.kind, inbox.unread)
        """
        return Inbox(self._client, user, keep=keep)


class Inbox:
    """A user's inbox kept current from ``user:<id>``: `unread` and the `latest` entries.

    The subscribe state gives the unread count and the newest notifications (all of them
    survive any time offline: the inbox does not depend on history), then each
    ``notification.created`` / ``notification.read`` updates both. Counts come only from the
    stream, in order, so a slower HTTP answer never overwrites a newer count.

    Attributes:
        user: Whose inbox.
        unread: The unread count.
        latest: The newest notifications known, newest first (at most ``keep``).
    """

    def __init__(self, client: _Owner, user: str | None, *, keep: int) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.user = user
        self.unread = 0
        self.latest: list[Notification] = []
        self._client = client
        self._keep = keep
        self._sub: Subscription | None = None
        self._first: InboxUpdate | None = None

    async def __aenter__(self) -> Inbox:
        if self.user is None:
            self.user = _subject(await self._client._fetch_token())
        sub = self._client.subscribe(f"user:{self.user}")
        await sub.__aenter__()
        self._sub = sub
        self._first = self._reset(sub.state)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> InboxUpdate:
        first, self._first = self._first, None
        if first is not None:
            return first
        if self._sub is None:
            raise RuntimeError("enter the inbox first: `async with client.notifications.inbox()`")
        while True:
            update = self._apply(await anext(self._sub))
            if update is not None:
                return update

    async def wait_for(
        self,
        predicate: Callable[[Inbox], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> InboxUpdate:
        """The first update (or the current state) after which ``predicate(inbox)`` holds."""
        async with asyncio.timeout(timeout):
            if predicate(self):
                return InboxUpdate("state", self.unread)
            async for update in self:
                if predicate(self):
                    return update
        raise RuntimeError("the inbox subscription ended")  # pragma: no cover

    async def mark_read(self, ids: Sequence[str] | None = None) -> int:
        """Mark ``ids`` (``None``: all) read over HTTP with the client's token; the unread
        count the server answered. `unread` itself changes when the event arrives."""
        from client_sdk._http import ServerAPI  # _http imports this module

        token = await self._client._fetch_token()
        if token is None:
            raise error_class("unauthorized")("marking read needs the client's token")
        async with ServerAPI(self._client.url, token) as api:
            return await api.notifications.mark_read(ids)

    def _reset(self, state: Any) -> InboxUpdate:
        if not isinstance(state, Mapping):
            raise error_class("internal")(f"user:{self.user}: malformed inbox state {state!r}")
        self.unread = int(state.get("unread", 0))
        self.latest = [Notification.from_snapshot(n) for n in state.get("latest") or ()]
        del self.latest[self._keep :]
        return InboxUpdate("state", self.unread)

    def _apply(self, item: Message | Resync) -> InboxUpdate | None:
        if isinstance(item, Resync):
            return self._reset(item.state)
        data = item.data
        if not isinstance(data, Mapping) or not isinstance(data.get("unread"), int):
            return None  # job.* and presence events share the user channel
        if item.type == "notification.created":
            notification = Notification.from_snapshot(data)
            if any(n.id == notification.id for n in self.latest):
                # Created just before we subscribed: the state already counted it.
                return None
            self.unread = data["unread"]
            self.latest = [notification, *self.latest][: self._keep]
            return InboxUpdate("created", self.unread, notification=notification)
        if item.type == "notification.read":
            ids = tuple(str(i) for i in data.get("ids") or ())
            self.unread = data["unread"]
            read_at = datetime.fromtimestamp(item.ts).astimezone()
            self.latest = [_read(n, read_at) if n.id in ids else n for n in self.latest]
            return InboxUpdate("read", self.unread, read_ids=ids)
        return None


def _read(notification: Notification, at: datetime) -> Notification:
    return notification if notification.read_at else dataclasses.replace(notification, read_at=at)


def _subject(token: str | None) -> str:
    """The ``sub`` of a JWT, unverified: only to name the user's channel (the server checks)."""
    try:
        payload = (token or "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise ValueError("cannot tell the user from the token: pass inbox(user=...)") from None
