"""The presence side of connections: reading a channel's presence (the ``presence`` request
and the HTTP API), the ``status`` and ``typing`` requests, and leaving after a grace period."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from domain.errors import BadRequest, PermissionDenied
from realtime.channels import Channel, ChannelKind, Namespace, Namespaces
from realtime.hub import Hub
from realtime.presence import ONLINE, REPORTED_STATUSES
from realtime.presence_status import StatusBoard
from realtime.presence_tracker import PresenceTracker
from realtime.presence_typing import TypingTracker
from server.auth.authz import Authorizer
from server.auth.tokens import Principal
from server.payloads import StatusRequest, TypingRequest
from server.socket.connections import Connection

log = logging.getLogger(__name__)


def has_typing(namespace: Namespace) -> bool:
    """Typing is shown to the others on a shared channel with presence; on one's own user:
    channel it means nothing."""
    return namespace.presence and namespace.name != ChannelKind.USER


async def read_presence(
    tracker: PresenceTracker,
    authorizer: Authorizer,
    principal: Principal,
    channel: Channel,
    limit: int,
    namespaces: Namespaces,
) -> dict[str, Any]:
    """``{channel, members: [{user, name, info, connections}], total}`` for whoever may
    subscribe to ``channel``."""
    if not channel.policy.presence:
        raise BadRequest(no_presence_message(channel, namespaces))
    if not await authorizer.can_subscribe(principal, channel):
        raise PermissionDenied(f"not allowed to see who is on {channel}")
    presence = await tracker.members(str(channel), limit)
    return {
        "channel": str(channel),
        "members": [member.as_dict() for member in presence.members],
        "total": presence.total,
    }


def no_presence_message(channel: Channel, namespaces: Namespaces) -> str:
    kinds = _listed(ns for ns in namespaces if ns.presence)
    return f"{channel} has no presence; presence is kept on {kinds} channels"


def _listed(namespaces: Iterable[Namespace]) -> str:
    return ", ".join(f"{ns.name}:" for ns in namespaces) or "no"


class PresenceEdge:
    """What the gateway does about presence beyond subscribing: status, typing, goodbyes."""

    def __init__(
        self,
        *,
        hub: Hub,
        tracker: PresenceTracker,
        statuses: StatusBoard,
        typing: TypingTracker,
        grace: float,
        namespaces: Namespaces,
    ) -> None:
        self._hub = hub
        self._namespaces = namespaces
        self._tracker = tracker
        self._statuses = statuses
        self._typing = typing
        self._grace = grace
        self._lingering: dict[str, asyncio.Task[None]] = {}

    async def connected(self, conn: Connection, status: object = None) -> None:
        """``status`` from the CONNECT auth payload: a reconnecting client says what it had,
        so the others see no flapping; anything but a reported status counts as online."""
        if status not in REPORTED_STATUSES:
            status = ONLINE
        principal = conn.principal
        await self._statuses.connect(conn.sid, principal.sub, principal.name, str(status))

    async def disconnected(self, sid: str, *, at_once: bool = False) -> None:
        """``sid`` is gone. Its typing stops now; its presence (channel memberships and status)
        stays ``grace`` seconds, so a reconnect within the grace period shows no leave and no
        join. Whatever the reason: a client closing on purpose is indistinguishable from a
        reload (python-socketio may see its DISCONNECT packet after the transport closed), and
        leaving on purpose is what ``unsubscribe`` is for."""
        await self._typing.stop_all(sid)
        if at_once or self._grace <= 0:
            await self._leave(sid)
            return
        task = asyncio.create_task(self._leave_later(sid), name=f"presence-grace-{sid}")
        self._lingering[sid] = task
        task.add_done_callback(lambda _: self._lingering.pop(sid, None))

    async def leave_node(self) -> None:
        """Everything of this node's goes now, lingering connections included (drain)."""
        for task in list(self._lingering.values()):
            task.cancel()
        await asyncio.gather(*self._lingering.values(), return_exceptions=True)
        await self._typing.stop_node()
        await self._tracker.leave_node()
        await self._statuses.leave_node()

    async def unsubscribed(self, sid: str, channel: Channel) -> None:
        await self._typing.stop(str(channel), sid)
        if channel.policy.presence:
            await self._tracker.leave(str(channel), sid)

    async def status(self, conn: Connection, req: StatusRequest) -> dict[str, Any]:
        """Record the connection's status; the ack carries the user's combined one."""
        return {"ok": True, "status": await self._statuses.set_status(conn.sid, req.status)}

    async def typing(
        self, conn: Connection, req: TypingRequest, channel: Channel
    ) -> dict[str, Any]:
        name = str(channel)
        if not has_typing(channel.policy):
            kinds = _listed(ns for ns in self._namespaces if has_typing(ns))
            raise BadRequest(f"typing is shown on {kinds} channels, not on {name}")
        if not self._hub.is_subscribed(conn.sid, name):
            raise BadRequest(f"subscribe to {name} before typing on it")
        if req.typing:
            await self._typing.start(name, conn.sid, conn.principal.sub, conn.principal.name)
        else:
            await self._typing.stop(name, conn.sid)
        return {"ok": True}

    async def _leave_later(self, sid: str) -> None:
        await asyncio.sleep(self._grace)
        await self._leave(sid)

    async def _leave(self, sid: str) -> None:
        try:
            await self._tracker.leave_all(sid)
        finally:
            await self._statuses.disconnect(sid)
