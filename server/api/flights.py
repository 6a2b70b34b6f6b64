"""The flights HTTP API: providers push status (API key or signed webhook), anyone reads."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from domain.errors import InvalidPayload, NotFound
from domain.flight_fields import (
    MAX_AIRPORT,
    MAX_BATCH,
    MAX_DELAY,
    MAX_GATE,
    MAX_LIST,
    MAX_NUMBER,
    FlightStatus,
)
from domain.flights import Applied, FlightQuery, FlightUpdate
from realtime.channels import InvalidChannel, check_id
from server.api.callers import ERRORS, Caller, RuntimeDep, needs
from server.auth.tokens import Principal
from server.webhooks.signatures import SIGNATURE_WINDOW_S, sign, verify_signature

__all__ = ["router", "sign", "verify_signature", "webhooks"]

router = APIRouter(prefix="/api/flights", tags=["flights"], responses=ERRORS)  # type: ignore[arg-type]
webhooks = APIRouter(prefix="/api/webhooks", tags=["flights"], responses=ERRORS)  # type: ignore[arg-type]
FlightsWriter = Annotated[Principal, needs("flights:write", service=True)]

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_GATE)]
Airport = Annotated[str, StringConstraints(min_length=1, max_length=MAX_AIRPORT)]
FlightId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PositionBody(Body):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    altitude: float | None = None
    heading: Annotated[float, Field(ge=0, lt=360)] | None = None


class FlightFields(Body):
    """Only the fields sent change; ``null`` clears an optional one."""

    number: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NUMBER)] | None = None
    date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    origin: Airport | None = None
    destination: Airport | None = None
    scheduled_departure: AwareDatetime | None = None
    estimated_departure: AwareDatetime | None = None
    actual_departure: AwareDatetime | None = None
    scheduled_arrival: AwareDatetime | None = None
    estimated_arrival: AwareDatetime | None = None
    actual_arrival: AwareDatetime | None = None
    gate: Text | None = None
    terminal: Text | None = None
    status: FlightStatus | None = None
    delay_minutes: Annotated[int, Field(ge=-MAX_DELAY, le=MAX_DELAY, strict=True)] | None = None
    position: PositionBody | None = None
    # The provider's time of this state: older than the stored one means ignored.
    provider_ts: AwareDatetime

    def update(self, flight_id: str) -> tuple[FlightUpdate, datetime]:
        fields = self.model_dump(exclude_unset=True, exclude={"id", "provider_ts"})
        return FlightUpdate(_checked_id(flight_id), fields), self.provider_ts


class WebhookFlight(FlightFields):
    id: FlightId


class WebhookBatch(Body):
    updates: Annotated[list[WebhookFlight], Field(min_length=1, max_length=MAX_BATCH)]


class FlightResult(BaseModel):
    flight: dict[str, Any]
    changed: bool
    changes: dict[str, list[Any]]


class DeliveryResult(BaseModel):
    duplicate: bool
    results: list[FlightResult]


class FlightList(BaseModel):
    flights: list[dict[str, Any]]


@router.get("", response_model=FlightList)
async def list_flights(
    _: Caller,
    runtime: RuntimeDep,
    origin: Annotated[str | None, Query(min_length=1, max_length=MAX_AIRPORT)] = None,
    departs_after: AwareDatetime | None = None,
    departs_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
) -> FlightList:
    """Flights in scheduled-departure order: what a departures board lists, then keeps live
    with ``airport:<origin>`` (every ``flight.updated`` of flights leaving it) and, for
    positions, each ``flight:<id>``."""
    query = FlightQuery(
        origin=origin, departs_after=departs_after, departs_before=departs_before, limit=limit
    )
    return FlightList(flights=[f.snapshot() for f in await runtime.flights.find(query)])


@router.put("/{flight_id}", response_model=FlightResult)
async def put_flight(
    flight_id: str, body: FlightFields, _: FlightsWriter, runtime: RuntimeDep
) -> FlightResult:
    """Create or update a flight. ``changed`` is false when the update was older than the
    stored state or changed nothing; then nothing is published."""
    update, provider_ts = body.update(flight_id)
    return _result(await runtime.flights.apply(update, provider_ts))


@router.get("/{flight_id}", response_model=dict[str, Any])
async def get_flight(flight_id: str, _: Caller, runtime: RuntimeDep) -> dict[str, Any]:
    return (await runtime.flights.get(flight_id)).snapshot()


@webhooks.post("/flights", response_model=DeliveryResult)
async def flights_webhook(
    request: Request,
    runtime: RuntimeDep,
    x_tandem_timestamp: Annotated[str | None, Header(max_length=32)] = None,
    x_tandem_signature: Annotated[str | None, Header(max_length=200)] = None,
) -> DeliveryResult:
    """A provider's signed delivery: one flight update, or ``{"updates": [...]}`` (at most
    100). ``X-Tandem-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``;
    a replay of an accepted delivery answers ``duplicate: true`` and applies nothing."""
    secret = runtime.settings.effective_webhook_secret()
    if secret is None:
        raise NotFound("the flights webhook is off: set TANDEM_FLIGHTS_WEBHOOK_SECRET")
    raw = await request.body()
    timestamp, signature = verify_signature(
        secret, raw, x_tandem_timestamp, x_tandem_signature, now=time.time()
    )
    updates = _parse_delivery(raw)
    # Remembered (to drop replays) until its timestamp could no longer be accepted.
    expires_at = datetime.fromtimestamp(timestamp + 2 * SIGNATURE_WINDOW_S, UTC)
    applied = await runtime.flights.apply_delivery(updates, key=signature, expires_at=expires_at)
    if applied is None:
        return DeliveryResult(duplicate=True, results=[])
    return DeliveryResult(duplicate=False, results=[_result(a) for a in applied])


def _parse_delivery(raw: bytes) -> list[tuple[FlightUpdate, datetime]]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidPayload("the body must be JSON") from None
    try:
        if isinstance(data, dict) and "updates" in data:
            items = WebhookBatch.model_validate(data).updates
        else:
            items = [WebhookFlight.model_validate(data)]
    except ValidationError as exc:
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ())) or "body"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        raise InvalidPayload("; ".join(parts) or "invalid delivery") from None
    return [item.update(item.id) for item in items]


def _checked_id(flight_id: str) -> str:
    try:
        return check_id(flight_id)
    except InvalidChannel as exc:
        raise InvalidPayload(f"flight id: {exc}") from None


def _result(applied: Applied) -> FlightResult:
    return FlightResult(
        flight=applied.flight.snapshot(), changed=applied.changed, changes=applied.changes
    )
