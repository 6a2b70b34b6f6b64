"""The fields a flight provider sets: their names, limits and how each is validated.

Every outside value passes ``validate_fields`` on its way in; a bad one raises InvalidPayload
and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from domain.errors import InvalidPayload

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


def validate_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
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
    return utc(value)


def utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidPayload("timestamps need a time zone")
    return value.astimezone(UTC)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
