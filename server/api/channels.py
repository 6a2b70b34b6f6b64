"""The HTTP API: publish, history, presence and tokens (OpenAPI at /docs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.api_keys import ADMIN, require_publish
from domain.errors import (
    DomainError,
    ErrorCode,
    InvalidPayload,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
    Unrecoverable,
)
from realtime.broker import (
    BrokerUnavailable,
    PublishResult,
    StreamPosition,
    UnrecoverablePosition,
)
from server.api.callers import (
    ERRORS,
    Caller,
    IdempotencyKey,
    Reply,
    RuntimeDep,
    ServiceCaller,
    allowed,
    needs,
)
from server.auth.tokens import Principal, mint_token
from server.errors import error_body
from server.namespaces import check_payload
from server.payloads import (
    SERVER_EVENT_PREFIXES,
    BatchQueuedResponse,
    BatchUnavailableResponse,
    HistoryResponse,
    HttpPublishBatchRequest,
    HttpPublishRequest,
    PresenceResponse,
    PublishBatchResponse,
    PublishResponse,
    QueuedResponse,
    TokenRequest,
    TokenResponse,
)
from server.runtime import Runtime
from server.socket.presence import read_presence
from storage.outbox import OutboxMessage, stage

router = APIRouter(prefix="/api", responses=ERRORS)  # type: ignore[arg-type]


@router.post(
    "/publish",
    response_model=PublishResponse | QueuedResponse,
    responses={202: {"model": QueuedResponse, "description": "durable: committed, not yet sent"}},
)
async def publish(
    body: HttpPublishRequest,
    caller: Caller,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BaseModel | JSONResponse:
    """Publish one event to a channel; retry with the same ``Idempotency-Key`` safely.

    Answers 503 with ``Retry-After`` while the broker is down, unless ``durable`` is set: then
    the event is committed to the outbox (202) and published when the broker can take it.
    """
    return (await publish_one(runtime, caller, body, idempotency_key)).respond(response)


async def publish_one(
    runtime: Runtime, caller: Principal, body: HttpPublishRequest, idempotency_key: str | None
) -> Reply:
    channel = runtime.namespaces.parse(body.channel)
    if caller.is_service:
        if caller.scopes is not None:
            require_publish(caller.scopes, str(channel))
        if body.event.startswith("server."):
            raise PermissionDenied("event types starting with 'server.' are reserved")
    elif not await runtime.authorizer.can_publish(caller, channel) or body.event.startswith(
        SERVER_EVENT_PREFIXES
    ):
        raise PermissionDenied(f"not allowed to publish {body.event!r} to {channel}")
    check_payload(channel, body.data)
    key = idempotency_key or body.id
    scoped = None if key is None else f"{caller.sub}:{key}"
    if body.durable:
        await _stage(runtime, OutboxMessage(str(channel), body.event, body.data, scoped))
        return Reply(202, QueuedResponse())
    try:
        result = await runtime.broker.publish(
            str(channel), body.event, body.data, idempotency_key=scoped
        )
    except BrokerUnavailable:
        runtime.metrics.broker_errors.labels("publish").inc()
        raise Unavailable(
            "the broker is unavailable; retry with the same Idempotency-Key"
        ) from None
    if not result.duplicate:
        runtime.metrics.http_publications.inc()
    return Reply(200, _wire_result(result))


async def _stage(runtime: Runtime, *messages: OutboxMessage) -> None:
    async with runtime.db.transaction() as session:
        await stage(session, messages)
    runtime.relay.wake()


@router.post(
    "/publish/batch",
    response_model=PublishBatchResponse | BatchQueuedResponse,
    responses={
        202: {"model": BatchQueuedResponse, "description": "durable: committed, not yet sent"},
        503: {
            "model": BatchUnavailableResponse,
            "description": "the broker failed: `results` says what was published; retry the "
            "whole batch with the same ids",
        },
    },
)
async def publish_batch(
    body: HttpPublishBatchRequest,
    caller: ServiceCaller,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BaseModel | JSONResponse:
    """Publish up to 100 events (API key only); per channel in request order.

    Every item is checked first (as ``POST /api/publish`` would); one bad item refuses the
    whole batch, naming its index, and nothing is published. Each item's idempotency key is
    its ``id``, else ``<Idempotency-Key header>:<index>``. Channels are published
    concurrently, each channel's items one after another.

    If the broker fails: 503 with ``Retry-After`` and ``results`` (null for each item not
    published). On a channel, nothing after a failed item is attempted, so retrying the whole
    batch with the same keys is safe and keeps the order: published items come back with
    ``duplicate: true`` and their original offsets. With ``durable``, every item is committed
    to the outbox in one transaction (202) and published when the broker can take it.
    """
    return (await publish_many(runtime, caller, body, idempotency_key)).respond(response)


async def publish_many(
    runtime: Runtime,
    caller: Principal,
    body: HttpPublishBatchRequest,
    idempotency_key: str | None,
) -> Reply:
    messages: list[OutboxMessage] = []
    keys: list[str | None] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(body.publications):
        where = f"publications[{index}]"
        try:
            parsed = runtime.namespaces.parse(item.channel)
        except DomainError as exc:
            raise type(exc)(f"{where}: {exc.message}") from None
        channel = str(parsed)
        if caller.scopes is not None:
            try:
                require_publish(caller.scopes, channel)
            except DomainError as exc:
                raise type(exc)(f"{where}: {exc.message}") from None
        if item.event.startswith("server."):
            raise PermissionDenied(f"{where}: event types starting with 'server.' are reserved")
        try:
            check_payload(parsed, item.data)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"{where}: {exc.message}") from None
        key = item.id or (None if idempotency_key is None else f"{idempotency_key}:{index}")
        if key is not None:
            first = seen.setdefault((channel, key), index)
            if first != index:
                raise InvalidPayload(f"{where}: id {key!r} is also publications[{first}]'s")
        scoped = None if key is None else f"{caller.sub}:{key}"
        keys.append(key)
        messages.append(OutboxMessage(channel, item.event, item.data, scoped))
    if body.durable:
        await _stage(runtime, *messages)
        return Reply(202, BatchQueuedResponse(ids=keys))
    results, failure = await _publish_in_order(runtime, messages)
    published = sum(1 for r in results if r is not None and not r.duplicate)
    if published:
        runtime.metrics.http_publications.inc(published)
    wire = [None if r is None else _wire_result(r) for r in results]
    if failure is not None:
        runtime.metrics.broker_errors.labels("publish").inc()
        done = sum(1 for r in results if r is not None)
        message = (
            f"the broker is unavailable; {done} of {len(results)} publications were published "
            "(see results); retry the whole batch with the same ids"
        )
        error = error_body(ErrorCode.BROKER_UNAVAILABLE, message, retryable=True)
        content = BatchUnavailableResponse.model_validate({"error": error, "results": wire})
        return Reply(503, content, {"Retry-After": "1"})
    return Reply(200, PublishBatchResponse(results=[r for r in wire if r is not None]))


def _wire_result(result: PublishResult) -> PublishResponse:
    return PublishResponse(offset=result.offset, epoch=result.epoch, duplicate=result.duplicate)


async def _publish_in_order(
    runtime: Runtime, messages: list[OutboxMessage]
) -> tuple[list[PublishResult | None], BrokerUnavailable | None]:
    """Publish each channel's messages in order, channels concurrently; stop a channel at its
    first failure. Returns every result (None: not published) and the first failure."""
    results: list[PublishResult | None] = [None] * len(messages)
    by_channel: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        by_channel.setdefault(message.channel, []).append(index)
    publish = runtime.broker.publish

    async def sequence(indices: list[int]) -> None:
        for index in indices:
            m = messages[index]
            results[index] = await publish(
                m.channel, m.event, m.data, idempotency_key=m.idempotency_key
            )

    if len(by_channel) == 1:
        outcomes: list[BaseException | None] = []
        try:
            await sequence(next(iter(by_channel.values())))
        except BrokerUnavailable as exc:
            outcomes.append(exc)
    else:
        outcomes = await asyncio.gather(
            *(sequence(indices) for indices in by_channel.values()), return_exceptions=True
        )
    failure = None
    for outcome in outcomes:
        if isinstance(outcome, BrokerUnavailable):
            failure = failure or outcome
        elif outcome is not None:
            raise outcome
    return results, failure


@router.get("/channels/{channel}/history", response_model=HistoryResponse)
async def history(
    channel: str,
    caller: Caller,
    runtime: RuntimeDep,
    since_epoch: Annotated[str | None, Query(max_length=64)] = None,
    since_offset: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int | None, Query(ge=0, le=1000)] = None,
) -> HistoryResponse:
    """Retained publications, oldest first; with ``since_*`` everything after that position."""
    allowed(caller, "history:read")
    parsed = runtime.namespaces.parse(channel)
    if not await runtime.authorizer.can_subscribe(caller, parsed):
        raise PermissionDenied(f"not allowed to read {parsed}")
    if (since_epoch is None) != (since_offset is None):
        raise InvalidPayload("give both since_epoch and since_offset, or neither")
    since = None if since_epoch is None else StreamPosition(since_epoch, since_offset or 0)
    try:
        result = await runtime.broker.history(str(parsed), since=since, limit=limit)
    except UnrecoverablePosition as exc:
        raise Unrecoverable(str(exc)) from None
    except BrokerUnavailable:
        raise Unavailable("the broker is unavailable; retry") from None
    return HistoryResponse.model_validate(
        {
            "channel": str(parsed),
            "epoch": result.position.epoch,
            "offset": result.position.offset,
            "publications": [pub.envelope() for pub in result.publications],
        }
    )


@router.get("/channels/{channel}/presence", response_model=PresenceResponse)
async def presence(channel: str, caller: Caller, runtime: RuntimeDep) -> PresenceResponse:
    """Who is on a ``doc:``, ``room:`` or ``user:`` channel, cluster-wide: one member per user
    with their number of connections, at most ``TANDEM_PRESENCE_MAX_MEMBERS`` of ``total``."""
    allowed(caller, "presence:read")
    limit = runtime.settings.presence_max_members
    try:
        parsed = runtime.namespaces.parse(channel)
        view = await read_presence(
            runtime.presence, runtime.authorizer, caller, parsed, limit, runtime.namespaces
        )
    except BrokerUnavailable:
        raise Unavailable("presence is unavailable; retry") from None
    return PresenceResponse.model_validate(view)


@router.post("/tokens", response_model=TokenResponse)
async def create_token(
    body: TokenRequest,
    caller: Annotated[Principal, needs("tokens", service=True)],
    runtime: RuntimeDep,
) -> TokenResponse:
    """Mint a user token with explicit channel grants (for pages and scripts); a token with
    the ``admin`` scope takes an admin key."""
    if body.scope and ADMIN in body.scope.split():
        allowed(caller, ADMIN)
    settings = runtime.settings
    if body.ttl > settings.token_max_ttl_s:
        raise InvalidPayload(f"ttl may be at most {settings.token_max_ttl_s} seconds")
    for name in body.channels:
        if not name.endswith("*"):
            runtime.namespaces.parse(name)
    token, expires_at = mint_token(
        settings,
        sub=body.sub,
        ttl_s=body.ttl,
        channels=body.channels,
        name=body.name,
        scope=body.scope,
        docs=dict(body.docs),
    )
    return TokenResponse(token=token, expires_at=expires_at)
