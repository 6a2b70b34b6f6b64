"""One flight's state as Tandem stores and publishes it, and what changed between two states."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from domain.errors import InvalidPayload
from domain.flight_fields import (
    FIELDS,
    REQUIRED,
    TIMES,
    FlightStatus,
    Position,
    utc,
    validate_fields,
)


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
        values = validate_fields(fields)
        missing = [name for name in REQUIRED if values.get(name) is None]
        if missing:
            raise InvalidPayload(f"a new flight needs {', '.join(missing)}")
        if not flight_id:
            raise InvalidPayload("the flight id must not be empty")
        return cls(id=flight_id, provider_ts=utc(provider_ts), version=1, updated_at=now, **values)

    def with_fields(
        self, fields: Mapping[str, Any], *, provider_ts: datetime, now: datetime
    ) -> Flight:
        """The next state (same version: ``bump`` decides whether anything changed)."""
        values = validate_fields(fields)
        for name in REQUIRED:
            if name in values and values[name] is None:
                raise InvalidPayload(f"{name} cannot be cleared")
        return dataclasses.replace(self, provider_ts=utc(provider_ts), updated_at=now, **values)

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
