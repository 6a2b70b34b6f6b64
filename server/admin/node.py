"""What the admin API asks of every node, run by each node on its own connections.

The admin API (server/api/admin.py) sends these as control-plane requests (realtime/control.py)
to every node; each runs them here. Arguments arrive from the broker, so they are validated
again: a bad one is answered with an error and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.errors import ErrorCode
from realtime.channels import InvalidChannel, UnknownNamespace
from realtime.control import ControlPlane
from server.admin.stats import NodeStats
from server.auth.revocations import Revocations
from server.socket.connections import Connection
from server.socket.gateway import SocketGateway

USER_MAX = 128
CONNECTION_MAX = 64
MESSAGE_MAX = 200


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UserArgs(_Args):
    user: str = Field(min_length=1, max_length=USER_MAX)


class DisconnectArgs(_Args):
    # Exactly one of them: every connection of a user, or one connection.
    user: str | None = Field(default=None, min_length=1, max_length=USER_MAX)
    connection: str | None = Field(default=None, min_length=1, max_length=CONNECTION_MAX)
    reconnect: bool = False
    message: str = Field(default="disconnected by an administrator", max_length=MESSAGE_MAX)


class UnsubscribeArgs(UserArgs):
    channel: str = Field(min_length=1, max_length=200)


class RevokeArgs(UserArgs):
    before: float


class ListArgs(_Args):
    limit: int = Field(default=200, ge=1, le=1000)


class NodeAdmin:
    """Lists, disconnects and unsubscribes this node's connections for the admin API."""

    def __init__(
        self,
        *,
        node_id: str,
        gateway: SocketGateway,
        revocations: Revocations,
        stats: NodeStats,
    ) -> None:
        self._node_id = node_id
        self._gateway = gateway
        self._revocations = revocations
        self._stats = stats
        revocations.on_revoked = self._enforce

    def register(self, control: ControlPlane) -> None:
        control.handle("stats", self.stats)
        control.handle("channels", self.channels)
        control.handle("all_connections", self.all_connections)
        control.handle("connections", self.connections)
        control.handle("disconnect", self.disconnect)
        control.handle("unsubscribe", self.unsubscribe)
        control.handle("revoke", self.revoke)

    async def stats(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return self._stats.snapshot()

    async def channels(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The channels with subscribers here, busiest first, and how many each has."""
        limit = ListArgs.model_validate(args).limit
        counts = Counter(
            name for conn in self._of(_any) for name in self._gateway.channels_of(conn.sid)
        )
        return {"channels": dict(counts.most_common(limit)), "total": len(counts)}

    async def all_connections(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """This node's connections, oldest first, at most ``limit``."""
        limit = ListArgs.model_validate(args).limit
        conns = sorted(self._of(_any), key=lambda c: c.connected_since)
        return {"connections": [self.describe(c) for c in conns[:limit]], "total": len(conns)}

    async def connections(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        user = UserArgs.model_validate(args).user
        return [self.describe(conn) for conn in self._of(lambda c: c.principal.sub == user)]

    def describe(self, conn: Connection) -> dict[str, Any]:
        return {
            "node": self._node_id,
            "connection": conn.sid,
            "user": conn.principal.sub,
            "transport": self._gateway.transport_of(conn.sid),
            "connected_since": conn.connected_since,
            "channels": sorted(self._gateway.channels_of(conn.sid)),
            "address": conn.address,
            "user_agent": conn.user_agent,
        }

    async def disconnect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        request = DisconnectArgs.model_validate(args)
        if (request.user is None) == (request.connection is None):
            raise ValueError("give a user or a connection")
        targets = self._of(lambda c: c.principal.sub == request.user or c.sid == request.connection)
        await asyncio.gather(
            *(
                self._gateway.kick(
                    conn.sid,
                    ErrorCode.DISCONNECTED_BY_ADMIN,
                    request.message,
                    reconnect=request.reconnect,
                )
                for conn in targets
            )
        )
        return {"disconnected": len(targets)}

    async def unsubscribe(self, args: Mapping[str, Any]) -> dict[str, Any]:
        request = UnsubscribeArgs.model_validate(args)
        try:
            channel = self._gateway.namespaces.parse(request.channel)
        except (InvalidChannel, UnknownNamespace) as exc:
            raise ValueError(exc.message) from None
        message = f"unsubscribed from {channel} by an administrator"
        ended = await asyncio.gather(
            *(
                self._gateway.end_subscription(
                    conn.sid, channel, ErrorCode.UNSUBSCRIBED_BY_ADMIN, message
                )
                for conn in self._of(lambda c: c.principal.sub == request.user)
            )
        )
        return {"unsubscribed": sum(ended)}

    async def revoke(self, args: Mapping[str, Any]) -> dict[str, Any]:
        request = RevokeArgs.model_validate(args)
        self._revocations.note(request.user, request.before)
        return {"disconnected": await self._enforce({request.user})}

    async def _enforce(self, users: set[str]) -> int:
        """Disconnect the connections of ``users`` authenticated with a revoked token."""
        revoked = self._revocations.revoked
        targets = self._of(lambda c: c.principal.sub in users and revoked(c.principal))
        await asyncio.gather(
            *(
                self._gateway.kick(
                    conn.sid,
                    ErrorCode.TOKEN_REVOKED,
                    "this connection's token was revoked; connect with a new token",
                    reconnect=False,
                )
                for conn in targets
            )
        )
        return len(targets)

    def _of(self, wanted: Callable[[Connection], bool]) -> list[Connection]:
        return [conn for conn in self._gateway.local_connections() if wanted(conn)]


def _any(conn: Connection) -> bool:
    return True
