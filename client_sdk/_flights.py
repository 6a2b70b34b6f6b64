"""Flights: put status over HTTP (``api.flights``), follow one live (``client.flights``)."""

from __future__ import annotations

import builtins
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from client_sdk._errors import NotFound
from client_sdk._models import Message, Resync, optional_datetime
from client_sdk._subscription import Subscription

if TYPE_CHECKING:
    from client_sdk._http import ServerAPI

log = logging.getLogger("client_sdk")

_TIMES = (
    "scheduled_departure",
    "estimated_departure",
    "actual_departure",
    "scheduled_arrival",
    "estimated_arrival",
    "actual_arrival",
)


class FlightStatus(StrEnum):
    SCHEDULED = "scheduled"
    BOARDING = "boarding"
    DEPARTED = "departed"
    DELAYED = "delayed"
    LANDED = "landed"
    CANCELLED = "cancelled"
    DIVERTED = "diverted"


@dataclass(frozen=True, slots=True)
class AircraftPosition:
    lat: float
    lon: float
    altitude: float | None = None
    heading: float | None = None


@dataclass(frozen=True, slots=True)
class Flight:
    """One flight's status; a higher ``version`` is newer (position updates count too).

    Times are timezone-aware (UTC); ``position`` is set while the provider reports one.
    """

    id: str
    number: str
    date: date
    origin: str
    destination: str
    status: FlightStatus
    delay_minutes: int
    gate: str | None
    terminal: str | None
    scheduled_departure: datetime | None
    estimated_departure: datetime | None
    actual_departure: datetime | None
    scheduled_arrival: datetime | None
    estimated_arrival: datetime | None
    actual_arrival: datetime | None
    position: AircraftPosition | None
    provider_ts: datetime
    version: int
    updated_at: datetime

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> Flight:
        """Parse a flight snapshot (``flight.updated`` data, subscribe state, HTTP body).

        Raises:
            ValueError: If a field is missing or has the wrong type.
        """
        try:
            return cls(
                id=str(snapshot["id"]),
                number=str(snapshot["number"]),
                date=date.fromisoformat(snapshot["date"]),
                origin=str(snapshot["origin"]),
                destination=str(snapshot["destination"]),
                status=FlightStatus(snapshot["status"]),
                delay_minutes=int(snapshot["delay_minutes"]),
                gate=snapshot.get("gate"),
                terminal=snapshot.get("terminal"),
                **{name: optional_datetime(snapshot.get(name)) for name in _TIMES},
                position=_position(snapshot.get("position")),
                provider_ts=datetime.fromisoformat(snapshot["provider_ts"]),
                version=int(snapshot["version"]),
                updated_at=datetime.fromisoformat(snapshot["updated_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed flight snapshot: {snapshot!r}") from exc

    def moved(self, event: Mapping[str, Any]) -> Flight:
        """This flight with a ``flight.position`` event applied (itself when not newer)."""
        version = int(event["version"])
        if version <= self.version:
            return self
        return dataclasses.replace(
            self,
            position=_position(event.get("position")),
            version=version,
            provider_ts=datetime.fromisoformat(event["provider_ts"]),
            updated_at=datetime.fromisoformat(event["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class FlightResult:
    """The outcome of `FlightsAPI.put`: ``changed`` is False for an unchanged or stale update
    (then nothing was published); ``changes`` is ``{field: [old, new]}``."""

    flight: Flight
    changed: bool
    changes: dict[str, list[Any]]


class FlightsAPI:
    """Flights over HTTP (``ServerAPI.flights``): providers put status, anyone reads."""

    def __init__(self, api: ServerAPI) -> None:
        self._api = api

    async def put(
        self, flight_id: str, *, provider_ts: datetime | None = None, **fields: Any
    ) -> FlightResult:
        """Create or update a flight; only the ``fields`` given change (``None`` clears one).

        Safe to retry: the same ``provider_ts`` and fields change nothing the second time.

        Args:
            flight_id: The flight id (its channel is ``flight:<id>``).
            provider_ts: The provider's time of this state (default: now); an update older
                than the stored one is ignored.
            **fields: ``number``, ``date``, ``origin``, ``destination``, the six times
                (``scheduled_departure`` ... ``actual_arrival``, aware datetimes), ``gate``,
                ``terminal``, ``status``, ``delay_minutes``, ``position`` (a mapping or an
                `AircraftPosition`).

        Raises:
            InvalidPayload: An unknown field or a bad value; a new flight without number,
                date, origin and destination.
        """
        at = provider_ts or datetime.now(UTC)
        body = {name: _wire(value) for name, value in fields.items()}
        body["provider_ts"] = at.isoformat()
        data = await self._api._request("PUT", _path(flight_id), json=body)
        return FlightResult(
            flight=Flight.from_snapshot(data["flight"]),
            changed=bool(data["changed"]),
            changes=dict(data["changes"]),
        )

    async def get(self, flight_id: str) -> Flight:
        """The flight's current status.

        Raises:
            NotFound: There is no such flight.
        """
        return Flight.from_snapshot(await self._api._request("GET", _path(flight_id)))

    async def list(
        self,
        *,
        origin: str | None = None,
        departs_after: datetime | None = None,
        departs_before: datetime | None = None,
        limit: int = 50,
    ) -> builtins.list[Flight]:
        """Flights in scheduled-departure order (a departures board)."""
        params: dict[str, str | int] = {"limit": limit}
        if origin is not None:
            params["origin"] = origin
        if departs_after is not None:
            params["departs_after"] = departs_after.isoformat()
        if departs_before is not None:
            params["departs_before"] = departs_before.isoformat()
        body = await self._api._request("GET", "/api/flights", params=params)
        return [Flight.from_snapshot(f) for f in body["flights"]]


class _Subscriber(Protocol):
    def subscribe(self, channel: str) -> Subscription: ...


class FlightWatcher:
    """Flights for a `Client` (``client.flights``)."""

    def __init__(self, client: _Subscriber) -> None:
        self._client = client

    def watch(self, flight_id: str) -> FlightWatch:
        """Iterate the flight's states: the current one first, then each newer one.

        Example:
            >>> async with client.flights.watch("TD123-20261123") as updates:
            ...     async for flight in updates:
            ...         print(flight.status, flight.gate, flight.position)
        """
        return FlightWatch(self._client, flight_id)


class FlightWatch:
    """An async iterator over one flight's states, applying ``flight.updated`` snapshots and
    ``flight.position`` moves by version, so a stale one is never yielded.

    Attributes:
        flight_id: The flight.
        latest: The last state yielded (``None`` before the first).
    """

    def __init__(self, client: _Subscriber, flight_id: str) -> None:
        self.flight_id = flight_id
        self.latest: Flight | None = None
        self._client = client
        self._sub: Subscription | None = None
        self._pending: Flight | None = None

    async def __aenter__(self) -> FlightWatch:
        sub = self._client.subscribe(f"flight:{self.flight_id}")
        await sub.__aenter__()
        self._sub = sub
        try:
            self._pending = self._state(sub.state)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> FlightWatch:
        return self

    async def __anext__(self) -> Flight:
        if self._sub is None:
            raise RuntimeError("enter it first: `async with client.flights.watch(id)`")
        while True:
            candidate, self._pending = self._pending, None
            if candidate is None:
                candidate = self._apply(await anext(self._sub))
            if candidate is not None and (
                self.latest is None or candidate.version > self.latest.version
            ):
                self.latest = candidate
                return candidate

    async def aclose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    def _state(self, state: Any) -> Flight:
        if not isinstance(state, Mapping) or "version" not in state:
            raise NotFound(f"no flight {self.flight_id!r}")
        return Flight.from_snapshot(state)

    def _apply(self, item: Message | Resync) -> Flight | None:
        if isinstance(item, Resync):
            return self._state(item.state)
        if not isinstance(item.data, Mapping):
            return None
        try:
            if item.type == "flight.updated":
                return Flight.from_snapshot(item.data)
            if item.type == "flight.position" and self.latest is not None:
                return self.latest.moved(item.data)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("flight %s: ignoring %s: %s", self.flight_id, item.type, exc)
        return None


def _wire(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, AircraftPosition):
        return dataclasses.asdict(value)
    return value


def _position(value: Any) -> AircraftPosition | None:
    if value is None:
        return None
    return AircraftPosition(
        lat=float(value["lat"]),
        lon=float(value["lon"]),
        altitude=None if value.get("altitude") is None else float(value["altitude"]),
        heading=None if value.get("heading") is None else float(value["heading"]),
    )


def _path(flight_id: str) -> str:
    return f"/api/flights/{quote(flight_id, safe='')}"
