"""Request payloads of the Socket.IO protocol and the HTTP API, validated with pydantic."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

EVENT_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$"
EventName = Annotated[str, StringConstraints(pattern=EVENT_PATTERN, max_length=64)]
ChannelName = Annotated[str, StringConstraints(min_length=3, max_length=160)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
DocPattern = Annotated[str, StringConstraints(min_length=1, max_length=129)]

# What every broker and client can carry: msgpack's integers (Redis), JSON's finite numbers.
_INT_RANGE = (-(2**63), 2**64 - 1)
_MAX_DEPTH = 100


def _portable(value: Any) -> Any:
    problem = _unportable(value, 0)
    if problem is not None:
        raise ValueError(problem)
    return value


def _unportable(value: Any, depth: int) -> str | None:
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else "NaN and Infinity are not JSON; send null"
    if kind is int:
        low, high = _INT_RANGE
        return None if low <= value <= high else "integers must fit in 64 bits; send a string"
    if kind is dict or kind is list:
        if depth >= _MAX_DEPTH:
            return f"nested deeper than {_MAX_DEPTH} levels"
        for item in value.values() if kind is dict else value:
            problem = _unportable(item, depth + 1)
            if problem is not None:
                return problem
    return None


# Data that ends up in a publication: refused at the door rather than by the broker later
# (a durable publication the Redis broker cannot encode would block its channel's outbox).
JsonData = Annotated[Any, AfterValidator(_portable)]

# Types the server itself emits; clients may not publish them (they would look authoritative).
SERVER_EVENT_PREFIXES = ("server.", "presence.", "job.", "notification.", "flight.", "doc.")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Since(Request):
    epoch: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    offset: Annotated[int, Field(ge=0)]


class SubscribeRequest(Request):
    channel: ChannelName
    since: Since | None = None
    # Be a member of the channel's presence (doc:, room:, user:): visible to the presence
    # request, announced with presence.join/leave. Off by default: watchers stay invisible.
    presence: bool = False


# Subscriptions one ``subscribe_many`` may carry: a reconnecting client sends what it held in
# requests of at most this many (the per-connection channel limit, 128 by default, is two).
MAX_SUBSCRIBE_BATCH = 100


class SubscribeManyRequest(Request):
    """``subscribe_many``: each item exactly what ``subscribe`` takes; one ack for all."""

    subscriptions: Annotated[
        list[SubscribeRequest], Field(min_length=1, max_length=MAX_SUBSCRIBE_BATCH)
    ]


class UnsubscribeRequest(Request):
    channel: ChannelName


class PresenceRequest(Request):
    channel: ChannelName


class StatusRequest(Request):
    # "offline" is not reported: it is what a user is once their last connection has gone.
    status: Literal["online", "away", "busy"]


class TypingRequest(Request):
    channel: ChannelName
    typing: bool


class PublishRequest(Request):
    channel: ChannelName
    event: EventName
    data: JsonData = None
    id: MessageId | None = None


class HttpPublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    event: EventName
    data: JsonData = None
    id: MessageId | None = None
    durable: bool = Field(
        default=False,
        description="Commit to the outbox and answer 202: published as soon as the broker "
        "can take it, even across a broker outage.",
    )


class PublishResponse(BaseModel):
    offset: int
    epoch: str
    duplicate: bool


MAX_BATCH_PUBLICATIONS = 100


class BatchPublication(BaseModel):
    """One item of ``POST /api/publish/batch``: exactly what ``POST /api/publish`` takes."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    event: EventName
    data: JsonData = None
    id: MessageId | None = Field(
        default=None,
        description="Idempotency key of this item (5 minutes, per channel); give one to make "
        "retries of the batch safe.",
    )


class HttpPublishBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    publications: Annotated[
        list[BatchPublication],
        Field(min_length=1, max_length=MAX_BATCH_PUBLICATIONS),
    ]
    durable: bool = Field(
        default=False,
        description="Commit every item to the outbox in one transaction and answer 202.",
    )


class PublishBatchResponse(BaseModel):
    results: list[PublishResponse] = Field(description="One per publication, in request order.")


class BatchQueuedResponse(BaseModel):
    queued: bool = True
    ids: list[str | None] = Field(
        description="Each item's idempotency key (its id, or the one derived from the "
        "Idempotency-Key header), in request order."
    )


class QueuedResponse(BaseModel):
    queued: bool = True


class Envelope(BaseModel):
    channel: str
    type: str
    offset: int
    epoch: str
    ts: float
    data: Any


class HistoryResponse(BaseModel):
    channel: str
    epoch: str
    offset: int
    publications: list[Envelope]


class PresenceMember(BaseModel):
    user: str
    name: str | None
    status: Literal["online", "away", "busy"] = Field(
        description="The user's status across the cluster: busy if any connection says so, "
        "else online if any is active, else away."
    )
    info: dict[str, Any]
    connections: int


class PresenceResponse(BaseModel):
    channel: str
    members: list[PresenceMember]
    total: int = Field(description="Users on the channel; members lists at most the cap.")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    name: Annotated[str, StringConstraints(max_length=128)] | None = None
    channels: Annotated[list[ChannelName], Field(max_length=100)] = Field(default_factory=list)
    scope: Annotated[str, StringConstraints(max_length=256)] | None = None
    docs: Annotated[dict[DocPattern, Literal["editor", "viewer"]], Field(max_length=100)] = Field(
        default_factory=dict,
        description="Documents the user may join: an id or 'prefix*', with a role.",
    )
    ttl: Annotated[int, Field(ge=1)] = 3600


class TokenResponse(BaseModel):
    token: str
    expires_at: int


class ErrorBody(BaseModel):
    code: str
    message: str
    retryable: bool


class ErrorResponse(BaseModel):
    error: ErrorBody


class BatchUnavailableResponse(ErrorResponse):
    results: list[PublishResponse | None] = Field(
        description="What was published before the broker failed (null: not published)."
    )


# -- collaborative documents (Socket.IO) ------------------------------------------------------

DocName = Annotated[str, StringConstraints(min_length=1, max_length=132)]
Epoch = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DocJoinRequest(Request):
    doc: DocName
    sv: bytes | None = None
    epoch: Epoch | None = None
    awareness: bytes | None = None


class DocUpdateRequest(Request):
    doc: DocName
    update: bytes


class DocSyncRequest(Request):
    doc: DocName
    sv: bytes


class DocAwarenessRequest(Request):
    doc: DocName
    update: bytes


class DocLeaveRequest(Request):
    doc: DocName
