"""The admin API: the nodes, their numbers, channels and connections; a user's live
connections on every node, and acting on them (disconnect, unsubscribe, revoke their tokens).
Every request reaches whichever node holds the connections, over the control plane; answers
are gathered within ``TANDEM_ADMIN_REQUEST_TIMEOUT_S`` and the nodes that did not answer are
named, never waited on longer."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from domain.errors import InvalidPayload, Unavailable
from realtime.broker import BrokerUnavailable
from realtime.control import Gathered
from server.admin.node import CONNECTION_MAX, MESSAGE_MAX, USER_MAX
from server.api.callers import ERRORS, AdminCaller, RuntimeDep
from server.runtime import Runtime

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERRORS)  # type: ignore[arg-type]

UserId = Annotated[str, Path(min_length=1, max_length=USER_MAX, description="The token's `sub`.")]
ConnectionId = Annotated[
    str, Path(min_length=1, max_length=CONNECTION_MAX, pattern=r"^[A-Za-z0-9_-]+$")
]
# How far in the future a revocation time may be: clock skew between the caller and us.
REVOKE_SKEW_S = 60.0


class ClusterAnswer(BaseModel):
    nodes: list[str] = Field(description="The nodes that answered.")
    missing: list[str] = Field(
        description="Known nodes that did not answer in time (down, or cut off from Redis)."
    )
    errors: dict[str, str] = Field(default_factory=dict, description="Nodes that failed, why.")


class NodeView(BaseModel):
    node: str
    alive: bool = Field(description="Heard from within three heartbeats.")
    last_seen: datetime
    started_at: datetime
    connections: int
    channels: int


class NodesResponse(BaseModel):
    node: str = Field(description="The node that answered this request.")
    nodes: list[NodeView]


class ConnectionView(BaseModel):
    node: str
    connection: str
    user: str
    transport: str = Field(description="`websocket` or `polling`.")
    connected_since: datetime
    channels: list[str]
    address: str
    user_agent: str


class ConnectionsResponse(ClusterAnswer):
    user: str
    connections: list[ConnectionView]


class DisconnectRequest(BaseModel):
    reconnect: bool = Field(
        default=False, description="Tell the clients to reconnect (else they stay away)."
    )
    message: str = Field(default="disconnected by an administrator", max_length=MESSAGE_MAX)


class DisconnectResponse(ClusterAnswer):
    disconnected: int


class UnsubscribeRequest(BaseModel):
    channel: str = Field(max_length=200, examples=["room:lobby"])


class UnsubscribeResponse(ClusterAnswer):
    unsubscribed: int


class RevokeRequest(BaseModel):
    before: AwareDatetime | None = Field(
        default=None,
        description="Tokens issued (`iat`) before this time are refused; default now. "
        "ISO 8601 with a time zone.",
    )

    @field_validator("before", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        # Pydantic would read a number (even "9999") as seconds since 1970: a typo must not
        # revoke, so only an ISO 8601 text is taken.
        if value is None:
            return value
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError("give an ISO 8601 time with a time zone, e.g. 2026-12-06T07:00:00Z")


class RevokeResponse(ClusterAnswer):
    user: str
    revoked_before: datetime = Field(description="In force (a later one already stored wins).")
    disconnected: int


@router.get("/nodes", response_model=NodesResponse)
async def nodes(_: AdminCaller, runtime: RuntimeDep) -> NodesResponse:
    """The nodes that announced themselves by heartbeat recently, alive or not."""
    return NodesResponse(
        node=runtime.node_id,
        nodes=[
            NodeView(
                node=n.node,
                alive=n.alive,
                last_seen=_utc(n.last_seen),
                started_at=_utc(n.started_at),
                connections=_count(n.info.get("connections")),
                channels=_count(n.info.get("channels")),
            )
            for n in runtime.control.nodes()
        ],
    )


class NodeStatsView(BaseModel):
    node: str
    ts: float = Field(description="When it was taken (seconds since 1970).")
    started_at: float
    connections: int
    channels: int
    subscriptions: int
    publications: int = Field(description="Accepted by this node since it started.")
    deliveries: int = Field(description="Written to this node's clients since it started.")
    publish_rate: float = Field(description="Per second, over the last interval.")
    delivery_rate: float
    slow_total: int = Field(description="Clients disconnected as slow since it started.")
    errors_total: int = Field(description="Requests answered with an error since it started.")
    slow: list[dict[str, Any]] = Field(description="The latest slow clients disconnected.")
    errors: list[dict[str, Any]] = Field(description="The latest errors.")


class StatsResponse(ClusterAnswer):
    stats: list[NodeStatsView]


class ChannelView(BaseModel):
    channel: str
    subscribers: int = Field(description="Subscriptions on every node that answered.")
    nodes: dict[str, int] = Field(description="Subscriptions by node.")


class ChannelsResponse(ClusterAnswer):
    channels: list[ChannelView]


class AllConnectionsResponse(ClusterAnswer):
    connections: list[ConnectionView]
    total: int = Field(description="Connections on the nodes that answered (not only listed).")


Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/stats", response_model=StatsResponse)
async def stats(_: AdminCaller, runtime: RuntimeDep) -> StatsResponse:
    """Every node's current numbers (the snapshot it also publishes on ``admin:stats``)."""
    gathered = await _ask(runtime, "stats", {})
    views = []
    for reply in gathered.replies.values():
        with contextlib.suppress(ValueError):
            views.append(NodeStatsView.model_validate(reply))
    return StatsResponse(stats=sorted(views, key=lambda v: v.node), **_answer(gathered))


@router.get("/channels", response_model=ChannelsResponse)
async def channels(_: AdminCaller, runtime: RuntimeDep, limit: Limit = 200) -> ChannelsResponse:
    """Channels with subscribers, busiest first (at most ``limit`` from each node)."""
    gathered = await _ask(runtime, "channels", {"limit": limit})
    merged: dict[str, dict[str, int]] = {}
    for node, reply in gathered.replies.items():
        counts = reply.get("channels") if isinstance(reply, dict) else None
        for name, count in (counts if isinstance(counts, dict) else {}).items():
            merged.setdefault(str(name), {})[node] = _count(count)
    views = [
        ChannelView(channel=name, subscribers=sum(by_node.values()), nodes=by_node)
        for name, by_node in merged.items()
    ]
    views.sort(key=lambda v: (-v.subscribers, v.channel))
    return ChannelsResponse(channels=views[:limit], **_answer(gathered))


@router.get("/connections", response_model=AllConnectionsResponse)
async def all_connections(
    _: AdminCaller, runtime: RuntimeDep, limit: Limit = 200
) -> AllConnectionsResponse:
    """Every node's connections, oldest first (at most ``limit`` from each node)."""
    gathered = await _ask(runtime, "all_connections", {"limit": limit})
    found, total = [], 0
    for reply in gathered.replies.values():
        if isinstance(reply, dict):
            found.extend(_connections(reply.get("connections")))
            total += _count(reply.get("total"))
    found.sort(key=lambda c: (c.connected_since, c.connection))
    return AllConnectionsResponse(connections=found, total=total, **_answer(gathered))


@router.get("/users/{user}/connections", response_model=ConnectionsResponse)
async def user_connections(user: UserId, _: AdminCaller, runtime: RuntimeDep) -> Any:
    """Every live connection of ``user``, on every node (none: an empty list)."""
    gathered = await _ask(runtime, "connections", {"user": user})
    found = [c for reply in gathered.replies.values() for c in _connections(reply)]
    found.sort(key=lambda c: (c.connected_since, c.connection))
    return ConnectionsResponse(user=user, connections=found, **_answer(gathered))


@router.post("/users/{user}/disconnect", response_model=DisconnectResponse)
async def disconnect_user(
    user: UserId, body: DisconnectRequest, _: AdminCaller, runtime: RuntimeDep
) -> DisconnectResponse:
    """Disconnect every connection of ``user``; each gets a ``server.notice``
    ``disconnected_by_admin`` first."""
    args = {"user": user, **body.model_dump()}
    return _disconnected(await _ask(runtime, "disconnect", args))


@router.post("/connections/{connection}/disconnect", response_model=DisconnectResponse)
async def disconnect_connection(
    connection: ConnectionId, body: DisconnectRequest, _: AdminCaller, runtime: RuntimeDep
) -> DisconnectResponse:
    """Disconnect one connection (its id from the connections list), wherever it is."""
    args = {"connection": connection, **body.model_dump()}
    return _disconnected(await _ask(runtime, "disconnect", args))


@router.post("/users/{user}/unsubscribe", response_model=UnsubscribeResponse)
async def unsubscribe_user(
    user: UserId, body: UnsubscribeRequest, _: AdminCaller, runtime: RuntimeDep
) -> UnsubscribeResponse:
    """End ``user``'s subscriptions to a channel on every connection; each gets a
    ``server.notice`` ``unsubscribed_by_admin`` naming the channel. The user may subscribe
    again (revoke their tokens to keep them out)."""
    channel = str(runtime.namespaces.parse(body.channel))
    gathered = await _ask(runtime, "unsubscribe", {"user": user, "channel": channel})
    return UnsubscribeResponse(unsubscribed=_total(gathered, "unsubscribed"), **_answer(gathered))


@router.post("/users/{user}/revoke-tokens", response_model=RevokeResponse)
async def revoke_tokens(
    user: UserId, body: RevokeRequest, _: AdminCaller, runtime: RuntimeDep
) -> RevokeResponse:
    """Refuse ``user``'s tokens issued before a time, on every node and after restarts, and
    disconnect the connections that use one (``server.notice`` ``token_revoked``).

    The revocation is stored first: a node that does not answer (listed in ``missing``)
    still applies it within ``TANDEM_REVOCATION_REFRESH_S``."""
    now = time.time()
    before = body.before.timestamp() if body.before is not None else now
    if before > now + REVOKE_SKEW_S:
        raise InvalidPayload("before: must not be in the future")
    in_force = await runtime.revocations.record(user, _utc(before))
    try:
        gathered = await _ask(runtime, "revoke", {"user": user, "before": in_force})
    except Unavailable:
        known = [n.node for n in runtime.control.nodes()]
        gathered = Gathered({}, known)
    return RevokeResponse(
        user=user,
        revoked_before=_utc(in_force),
        disconnected=_total(gathered, "disconnected"),
        **_answer(gathered),
    )


async def _ask(runtime: Runtime, op: str, args: dict[str, Any]) -> Gathered:
    try:
        return await runtime.control.request(
            op, args, wait_s=runtime.settings.admin_request_timeout_s
        )
    except BrokerUnavailable:
        raise Unavailable("the broker is unavailable; retry") from None


def _connections(reply: object) -> list[ConnectionView]:
    """A node's answer, each entry checked: a malformed one is left out, not a 500."""
    found = []
    for item in reply if isinstance(reply, list) else []:
        try:
            since = _utc(float(item["connected_since"]))
            found.append(ConnectionView.model_validate({**item, "connected_since": since}))
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
    return found


def _answer(gathered: Gathered) -> dict[str, Any]:
    return {
        "nodes": sorted(gathered.replies),
        "missing": gathered.missing,
        "errors": gathered.errors,
    }


def _disconnected(gathered: Gathered) -> DisconnectResponse:
    return DisconnectResponse(disconnected=_total(gathered, "disconnected"), **_answer(gathered))


def _total(gathered: Gathered, key: str) -> int:
    return sum(
        _count(reply.get(key)) for reply in gathered.replies.values() if isinstance(reply, dict)
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
