"""Flights: a status record per flight, pushed live on ``flight:<id>``.

A provider sends updates stamped with its own timestamp (``provider_ts``). An update older
than the stored state is ignored, so out-of-order deliveries never move a flight backwards;
an update that changes nothing publishes nothing. Every change bumps the version, writes one
history row per changed field and publishes one event (domain/flight_events.py says which).
The record and its fields live in domain/flight.py and domain/flight_fields.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain.clock import Clock
from domain.errors import Conflict, InvalidPayload, NotFound
from domain.events import EventSink
from domain.flight import Changes, Flight, diff
from domain.flight_events import change_event
from domain.flight_fields import MAX_BATCH, MAX_LIST, utc


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
            departs_after=None if query.departs_after is None else utc(query.departs_after),
            departs_before=None if query.departs_before is None else utc(query.departs_before),
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
                results[i] = await self._apply_one(uow, update, utc(provider_ts), now)
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
