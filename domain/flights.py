"""Flights: a status record per flight, pushed live on ``flight:<id>``.

A provider sends updates stamped with its own timestamp (``provider_ts``). An update older
than the stored state is ignored, so out-of-order deliveries never move a flight backwards;
an update that changes nothing publishes nothing. Every change bumps the version, writes one
history row per changed field and publishes ``flight.updated`` with the snapshot and
``changes: {field: [old, new]}``, except when only the aircraft position moved: then the much
smaller ``flight.position`` (id, position, version) goes out instead. Positions are a
latest-value stream (a slow client may skip to the newest one), status changes are not, so
they travel as different event types.

``flight.updated`` also goes to ``airport:<origin>``, the departures of that airport: a board
learns of a new flight, or one moved to another airport, the moment it changes. Positions do
not: a board that wants them follows the flight's own channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Protocol

from domain.clock import Clock
from domain.errors import Conflict, InvalidPayload, NotFound
from domain.events import DomainEvent, EventSink

MAX_NUMBER = 16
MAX_AIRPORT = 8
MAX_GATE = 16
MAX_DELAY = 7 * 24 * 60
MAX_BATCH = 100
MAX_LIST = 200


class FlightStatus(StrEnum):
    SCHEDULED = "scheduled"
    BOARDING = "boarding"
    DEPARTED = "departed"
    DELAYED = "delayed"
    LANDED = "landed"
    CANCELLED = "cancelled"
    DIVERTED = "diverted"


TIMES = (
    "scheduled_departure",
    "estimated_departure",
    "actual_departure",
    "scheduled_arrival",
    "estimated_arrival",
    "actual_arrival",
)
# The fields an update may set, in snapshot order; ``changes`` names only these.
FIELDS = (
    "number",
    "date",
    "origin",
    "destination",
    *TIMES,
    "gate",
    "terminal",
    "status",
    "delay_minutes",
    "position",
)
REQUIRED = ("number", "date", "origin", "destination")


@dataclass(frozen=True, slots=True)
class Position:
    lat: float
    lon: float
    altitude: float | None = None
    heading: float | None = None

    @classmethod
    def parse(cls, value: Any) -> Position:
        if isinstance(value, Position):
            position = value
        elif isinstance(value, Mapping):
            unknown = set(value) - {"lat", "lon", "altitude", "heading"}
            if unknown:
                raise InvalidPayload(f"position: unknown field {sorted(unknown)[0]!r}")
            try:
                position = cls(
                    lat=float(value["lat"]),
                    lon=float(value["lon"]),
                    altitude=_float_or_none(value.get("altitude")),
                    heading=_float_or_none(value.get("heading")),
                )
            except (KeyError, TypeError, ValueError):
                raise InvalidPayload("position needs numeric lat and lon") from None
        else:
            raise InvalidPayload("position must be an object with lat and lon")
        if not -90 <= position.lat <= 90 or not -180 <= position.lon <= 180:
            raise InvalidPayload("position: lat must be within ±90 and lon within ±180")
        if position.heading is not None and not 0 <= position.heading < 360:
            raise InvalidPayload("position: heading must be in [0, 360)")
        return position

    def snapshot(self) -> dict[str, Any]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "altitude": self.altitude,
            "heading": self.heading,
        }


@dataclass(frozen=True, slots=True)
class Flight:
    id: str
    number: str
    date: date
    origin: str
    destination: str
    provider_ts: datetime
    version: int
    updated_at: datetime
    status: FlightStatus = FlightStatus.SCHEDULED
    scheduled_departure: datetime | None = None
    estimated_departure: datetime | None = None
    actual_departure: datetime | None = None
    scheduled_arrival: datetime | None = None
    estimated_arrival: datetime | None = None
    actual_arrival: datetime | None = None
    gate: str | None = None
    terminal: str | None = None
    delay_minutes: int = 0
    position: Position | None = None

    @classmethod
    def create(
        cls, flight_id: str, fields: Mapping[str, Any], *, provider_ts: datetime, now: datetime
    ) -> Flight:
        values = _validate(fields)
        missing = [name for name in REQUIRED if values.get(name) is None]
        if missing:
            raise InvalidPayload(f"a new flight needs {', '.join(missing)}")
        if not flight_id:
            raise InvalidPayload("the flight id must not be empty")
        return cls(id=flight_id, provider_ts=_utc(provider_ts), version=1, updated_at=now, **values)

    def with_fields(
        self, fields: Mapping[str, Any], *, provider_ts: datetime, now: datetime
    ) -> Flight:
        """The next state (same version: ``bump`` decides whether anything changed)."""
        values = _validate(fields)
        for name in REQUIRED:
            if name in values and values[name] is None:
                raise InvalidPayload(f"{name} cannot be cleared")
        return dataclasses.replace(self, provider_ts=_utc(provider_ts), updated_at=now, **values)

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape every client sees, over the socket and over HTTP."""
        return {
            "id": self.id,
            **self.fields(),
            "provider_ts": self.provider_ts.isoformat(),
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
        }

    def fields(self) -> dict[str, Any]:
        """The provider-set fields as JSON values, in ``FIELDS`` order."""
        return {
            "number": self.number,
            "date": self.date.isoformat(),
            "origin": self.origin,
            "destination": self.destination,
            **{
                name: None if getattr(self, name) is None else getattr(self, name).isoformat()
                for name in TIMES
            },
            "gate": self.gate,
            "terminal": self.terminal,
            "status": self.status.value,
            "delay_minutes": self.delay_minutes,
            "position": None if self.position is None else self.position.snapshot(),
        }


Changes = dict[str, list[Any]]


def diff(before: Flight | None, after: Flight) -> Changes:
    """``{field: [old, new]}`` for every field whose JSON value differs."""
    old = {} if before is None else before.fields()
    new = after.fields()
    return {name: [old.get(name), new[name]] for name in FIELDS if old.get(name) != new[name]}


@dataclass(frozen=True, slots=True)
class FlightUpdate:
    """What a provider says about one flight: only the fields it names change
    (``None`` clears an optional one)."""

    id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    flight: Flight
    changed: bool
    changes: Changes


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    flight_id: str
    version: int
    field: str
    old: Any
    new: Any
    provider_ts: datetime
    created_at: datetime


def updated_event(flight: Flight, changes: Changes) -> DomainEvent:
    # A flight moved to another origin leaves the old airport's board too.
    origins = [flight.origin, *changes.get("origin", ())]
    airports = dict.fromkeys(o for o in origins if isinstance(o, str) and o.isalnum())
    return DomainEvent(
        type="flight.updated",
        data={**flight.snapshot(), "changes": changes},
        topics=(("flight", flight.id), *(("airport", code) for code in airports)),
    )


def position_event(flight: Flight) -> DomainEvent:
    """Only the position moved: what a map needs, with the version that orders it."""
    return DomainEvent(
        type="flight.position",
        data={
            "id": flight.id,
            "position": None if flight.position is None else flight.position.snapshot(),
            "version": flight.version,
            "provider_ts": flight.provider_ts.isoformat(),
            "updated_at": flight.updated_at.isoformat(),
        },
        topics=(("flight", flight.id),),
    )


def change_event(flight: Flight, changes: Changes) -> DomainEvent:
    if set(changes) == {"position"}:
        return position_event(flight)
    return updated_event(flight, changes)


@dataclass(frozen=True, slots=True)
class FlightQuery:
    """Which flights a board lists: by origin and a window of scheduled departure, in
    departure order (flights without a scheduled departure last)."""

    origin: str | None = None
    departs_after: datetime | None = None
    departs_before: datetime | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIST:
            raise InvalidPayload(f"limit must be between 1 and {MAX_LIST}")
        for moment in (self.departs_after, self.departs_before):
            if moment is not None and moment.tzinfo is None:
                raise InvalidPayload("departure bounds need a time zone")


class FlightRepository(Protocol):
    """Flights as stored. ``lock`` holds the row until commit (None when there is none);
    ``add`` raises Conflict when the id exists; ``save`` raises Conflict on a lost update;
    ``claim_delivery`` raises Conflict when the key is held and not yet expired."""

    async def get(self, flight_id: str) -> Flight | None: ...

    async def lock(self, flight_id: str) -> Flight | None: ...

    async def add(self, flight: Flight) -> None: ...

    async def save(self, flight: Flight, expected_version: int) -> None: ...

    async def record(self, entries: Sequence[HistoryEntry]) -> None: ...

    async def history(self, flight_id: str) -> list[HistoryEntry]: ...

    async def find(self, query: FlightQuery) -> list[Flight]: ...

    async def claim_delivery(self, key: str, now: datetime, expires_at: datetime) -> None: ...


class FlightUnitOfWork(Protocol):
    @property
    def flights(self) -> FlightRepository: ...

    @property
    def events(self) -> EventSink: ...


UnitOfWork = Callable[[], AbstractAsyncContextManager[FlightUnitOfWork]]


class FlightService:
    def __init__(self, unit_of_work: UnitOfWork, clock: Clock) -> None:
        self._uow = unit_of_work
        self._clock = clock

    async def apply(self, update: FlightUpdate, provider_ts: datetime) -> Applied:
        """Create or update one flight; see the module docstring for the rules."""
        (applied,) = await self._apply_all([(update, provider_ts)], delivery=None)
        return applied

    async def apply_delivery(
        self,
        updates: Sequence[tuple[FlightUpdate, datetime]],
        *,
        key: str,
        expires_at: datetime,
    ) -> list[Applied] | None:
        """Apply a provider delivery once: None when ``key`` was already accepted (and has
        not expired); the claim and the updates commit together."""
        if len(updates) > MAX_BATCH:
            raise InvalidPayload(f"at most {MAX_BATCH} updates per delivery")
        try:
            return await self._apply_all(updates, delivery=(key, expires_at))
        except _Duplicate:
            return None

    async def get(self, flight_id: str) -> Flight:
        async with self._uow() as uow:
            flight = await uow.flights.get(flight_id)
        if flight is None:
            raise NotFound(f"no flight {flight_id!r}")
        return flight

    async def history(self, flight_id: str) -> list[HistoryEntry]:
        async with self._uow() as uow:
            return await uow.flights.history(flight_id)

    async def find(self, query: FlightQuery) -> list[Flight]:
        """The flights a departures board shows (see FlightQuery)."""
        query = dataclasses.replace(
            query,
            origin=None if query.origin is None else query.origin.upper(),
            # Stored times are UTC; SQLite compares them as text.
            departs_after=None if query.departs_after is None else _utc(query.departs_after),
            departs_before=None if query.departs_before is None else _utc(query.departs_before),
        )
        async with self._uow() as uow:
            return await uow.flights.find(query)

    async def _apply_all(
        self,
        updates: Sequence[tuple[FlightUpdate, datetime]],
        delivery: tuple[str, datetime] | None,
    ) -> list[Applied]:
        # One retry: a concurrent first update of the same flight makes ``add`` conflict.
        for attempt in range(2):
            try:
                return await self._transaction(updates, delivery)
            except _Duplicate:
                raise
            except Conflict:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _transaction(
        self,
        updates: Sequence[tuple[FlightUpdate, datetime]],
        delivery: tuple[str, datetime] | None,
    ) -> list[Applied]:
        now = self._clock.now()
        # Rows are locked in id order (stable, so one flight's updates keep their order).
        order = sorted(range(len(updates)), key=lambda i: updates[i][0].id)
        results: dict[int, Applied] = {}
        async with self._uow() as uow:
            if delivery is not None:
                try:
                    await uow.flights.claim_delivery(delivery[0], now, delivery[1])
                except Conflict:
                    raise _Duplicate from None
            for i in order:
                update, provider_ts = updates[i]
                results[i] = await self._apply_one(uow, update, _utc(provider_ts), now)
        return [results[i] for i in range(len(updates))]

    async def _apply_one(
        self, uow: FlightUnitOfWork, update: FlightUpdate, provider_ts: datetime, now: datetime
    ) -> Applied:
        current = await uow.flights.lock(update.id)
        if current is None:
            flight = Flight.create(update.id, update.fields, provider_ts=provider_ts, now=now)
            await uow.flights.add(flight)
            changes = diff(None, flight)
        else:
            if provider_ts < current.provider_ts:
                return Applied(current, changed=False, changes={})
            candidate = current.with_fields(update.fields, provider_ts=provider_ts, now=now)
            changes = diff(current, candidate)
            if not changes:
                # Nothing to tell anyone; remember the newer provider time quietly.
                if provider_ts > current.provider_ts:
                    await uow.flights.save(
                        dataclasses.replace(current, provider_ts=provider_ts), current.version
                    )
                return Applied(current, changed=False, changes={})
            flight = dataclasses.replace(candidate, version=current.version + 1)
            await uow.flights.save(flight, current.version)
        await uow.flights.record(
            [
                HistoryEntry(flight.id, flight.version, name, old, new, provider_ts, now)
                for name, (old, new) in changes.items()
            ]
        )
        uow.events.emit(change_event(flight, changes))
        return Applied(flight, changed=True, changes=changes)


class _Duplicate(Exception):
    """The delivery key was already claimed."""


def _validate(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Domain values for the named fields; unknown names and bad values raise InvalidPayload."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise InvalidPayload(f"unknown flight field {sorted(unknown)[0]!r}")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            if name in ("status", "delay_minutes"):
                raise InvalidPayload(f"{name} cannot be null")
            values[name] = None
        elif name == "number":
            values[name] = _text(name, value, MAX_NUMBER)
        elif name in ("origin", "destination"):
            values[name] = _text(name, value, MAX_AIRPORT).upper()
        elif name in ("gate", "terminal"):
            values[name] = _text(name, value, MAX_GATE)
        elif name == "date":
            values[name] = _date(value)
        elif name in TIMES:
            values[name] = _moment(name, value)
        elif name == "status":
            try:
                values[name] = FlightStatus(value)
            except ValueError:
                known = ", ".join(s.value for s in FlightStatus)
                raise InvalidPayload(f"status must be one of {known}") from None
        elif name == "delay_minutes":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidPayload("delay_minutes must be an integer")
            if not -MAX_DELAY <= value <= MAX_DELAY:
                raise InvalidPayload(f"delay_minutes must be within ±{MAX_DELAY}")
            values[name] = value
        else:
            values[name] = Position.parse(value)
    return values


def _text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidPayload(f"{name} must be 1 to {limit} characters")
    return value


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        raise InvalidPayload("date must be a calendar date (YYYY-MM-DD)")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidPayload("date must be a calendar date (YYYY-MM-DD)") from None


def _moment(name: str, value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidPayload(f"{name} must be an ISO 8601 datetime") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidPayload(f"{name} must be an ISO 8601 datetime with a time zone")
    return _utc(value)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidPayload("timestamps need a time zone")
    return value.astimezone(UTC)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
