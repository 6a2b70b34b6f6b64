"""The outgoing webhooks HTTP API: endpoints, their deliveries, replays (API keys only)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from domain.webhooks import (
    CHANNEL_EVENT_TYPES,
    EVENT_TYPES,
    MAX_DESCRIPTION,
    MAX_EVENTS,
    MAX_URL,
    DeliveryStatus,
    WebhookEndpoint,
    check_events,
    check_secret,
    check_url,
)
from realtime.channels import ChannelKind
from server.api.callers import ERRORS, RuntimeDep, needs
from server.auth.tokens import Principal
from storage.webhooks import new_id

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ERRORS)  # type: ignore[arg-type]

WebhookCaller = Annotated[Principal, needs("webhooks", service=True)]

_EVENTS_DOC = (
    f"Event types: {', '.join(EVENT_TYPES)}. {', '.join(CHANNEL_EVENT_TYPES)} take an optional "
    f"':<namespace>' (a configured channel namespace: {', '.join(ChannelKind)} or one from "
    "TANDEM_CHANNELS_FILE), e.g. 'presence.join:room'."
)
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL)]
Events = Annotated[list[Annotated[str, Field(max_length=80)]], Field(max_length=MAX_EVENTS)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateEndpoint(Body):
    url: Url
    events: Events = Field(description=_EVENTS_DOC)
    description: Description = ""
    secret: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="Signs every request; generated when left out."
    )
    enabled: bool = True


class UpdateEndpoint(Body):
    url: Url | None = None
    events: Events | None = Field(default=None, description=_EVENTS_DOC)
    description: Description | None = None
    enabled: bool | None = None


class EndpointView(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: str
    updated_at: str


class CreatedEndpoint(EndpointView):
    secret: str = Field(description="Shown only here: keep it to verify signatures.")


class EndpointList(BaseModel):
    endpoints: list[EndpointView]


class DeliveryView(BaseModel):
    id: str = Field(description="The Webhook-Id header of its requests.")
    endpoint_id: str
    event_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None
    payload: dict[str, Any] | None = None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]
    next_cursor: str | None = Field(
        default=None, description="Pass as `before` for the next (older) page."
    )


class Replayed(BaseModel):
    replayed: int


@router.post("", response_model=CreatedEndpoint, status_code=201)
async def create_endpoint(
    body: CreateEndpoint, _: WebhookCaller, runtime: RuntimeDep
) -> CreatedEndpoint:
    """Register an endpoint. The answer carries its signing secret, the only time it is shown."""
    now = datetime.now(UTC)
    endpoint = WebhookEndpoint(
        id=new_id(),
        url=check_url(body.url),
        events=check_events(body.events, (ns.name for ns in runtime.namespaces)),
        description=body.description,
        enabled=body.enabled,
        secret=check_secret(body.secret) if body.secret is not None else _new_secret(),
        created_at=now,
        updated_at=now,
    )
    await runtime.webhooks.create(endpoint)
    await runtime.webhook_feed.changed()
    return CreatedEndpoint(**endpoint.snapshot(), secret=endpoint.secret)


@router.get("", response_model=EndpointList)
async def list_endpoints(_: WebhookCaller, runtime: RuntimeDep) -> EndpointList:
    endpoints = await runtime.webhooks.endpoints()
    return EndpointList(endpoints=[EndpointView(**e.snapshot()) for e in endpoints])


@router.get("/{endpoint_id}", response_model=EndpointView)
async def get_endpoint(endpoint_id: str, _: WebhookCaller, runtime: RuntimeDep) -> EndpointView:
    return EndpointView(**(await runtime.webhooks.get(endpoint_id)).snapshot())


@router.patch("/{endpoint_id}", response_model=EndpointView)
async def update_endpoint(
    endpoint_id: str, body: UpdateEndpoint, _: WebhookCaller, runtime: RuntimeDep
) -> EndpointView:
    """Change what is sent. A disabled endpoint gets no new deliveries, and the pending ones
    wait until it is enabled again."""
    changes: dict[str, Any] = {}
    if body.url is not None:
        changes["url"] = check_url(body.url)
    if body.events is not None:
        changes["events"] = check_events(body.events, (ns.name for ns in runtime.namespaces))
    if body.description is not None:
        changes["description"] = body.description
    if body.enabled is not None:
        changes["enabled"] = body.enabled
    endpoint = await runtime.webhooks.update(endpoint_id, **changes)
    await runtime.webhook_feed.changed()
    if endpoint.enabled:
        runtime.webhook_sender.wake()
    return EndpointView(**endpoint.snapshot())


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, _: WebhookCaller, runtime: RuntimeDep) -> Response:
    """Forget the endpoint and all its deliveries (an attempt under way may still arrive)."""
    await runtime.webhooks.delete(endpoint_id)
    await runtime.webhook_feed.changed()
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    endpoint_id: str,
    _: WebhookCaller,
    runtime: RuntimeDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first; ``status`` filters, ``before`` pages."""
    found = await runtime.webhooks.deliveries(endpoint_id, status, limit, before=before)
    return DeliveryList(
        deliveries=[DeliveryView(**d.snapshot()) for d in found],
        next_cursor=found[-1].id if len(found) == limit else None,
    )


@router.post("/{endpoint_id}/deliveries/replay", response_model=Replayed)
async def replay_dead(endpoint_id: str, _: WebhookCaller, runtime: RuntimeDep) -> Replayed:
    """Send every dead delivery of the endpoint again, each with a fresh set of attempts."""
    replayed = await runtime.webhooks.replay_dead(endpoint_id)
    runtime.webhook_sender.wake()
    return Replayed(replayed=replayed)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryView)
async def get_delivery(delivery_id: str, _: WebhookCaller, runtime: RuntimeDep) -> DeliveryView:
    """One delivery, with the payload it sends."""
    delivery = await runtime.webhooks.delivery(delivery_id)
    return DeliveryView(**delivery.snapshot(), payload=delivery.payload())


@router.post("/deliveries/{delivery_id}/replay", response_model=DeliveryView)
async def replay_delivery(delivery_id: str, _: WebhookCaller, runtime: RuntimeDep) -> DeliveryView:
    """Send a delivery again now (same ``Webhook-Id``), with a fresh set of attempts: a dead
    one, or a delivered one a receiver lost. 409 while an attempt is under way."""
    delivery = await runtime.webhooks.replay(delivery_id)
    runtime.webhook_sender.wake()
    return DeliveryView(**delivery.snapshot())


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)
