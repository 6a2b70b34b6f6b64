"""``tandem demo``: feed a running Tandem with a simulated airport, so dashboards have live data.

A client of the HTTP API like any backend (the SDK's `ServerAPI` with an API key), never part
of the server process. A departures board of departing flights at one hub runs on a simulated
clock (``speed`` simulated minutes per real second): scheduled -> boarding -> departed (position
reports while airborne) -> landed, with delays (delay minutes and new estimated times), gate
changes, the odd cancellation and diversion. Demo users follow some of the flights and get
notifications when those change, and now and then a job (a report export) runs with progress.

Everything random comes from one seeded generator and happens at simulated times, so a seed
replays the same day; the feed stops by itself after ``duration_s``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from client_sdk import ServerAPI, TandemError

log = logging.getLogger(__name__)

HUB = "AMS"
HUB_TIME_ZONE = "Europe/Amsterdam"
USERS = ("ada", "grace", "linus")
_AIRPORTS = {  # code: (lat, lon)
    "AMS": (52.31, 4.76), "LHR": (51.47, -0.45), "CDG": (49.01, 2.55), "FRA": (50.03, 8.56),
    "MAD": (40.47, -3.57), "BCN": (41.30, 2.08), "FCO": (41.80, 12.25), "LIS": (38.77, -9.13),
    "CPH": (55.62, 12.65), "OSL": (60.19, 11.10), "ARN": (59.65, 17.92), "DUB": (53.42, -6.27),
    "ZRH": (47.46, 8.55), "VIE": (48.11, 16.57), "PRG": (50.10, 14.26), "WAW": (52.17, 20.97),
    "ATH": (37.94, 23.94), "IST": (41.26, 28.74), "MAN": (53.35, -2.27), "EDI": (55.95, -3.36),
    "HEL": (60.32, 24.96), "BER": (52.37, 13.50), "JFK": (40.64, -73.78), "DXB": (25.25, 55.36),
}  # fmt: skip
_AIRLINES = ("TD", "TD", "TD", "KL", "HV", "U2")
_PIERS = "BCDEFGHM"
_DELAYS = (10, 15, 20, 25, 30, 45, 60, 90)
_REPORTS = ("Passenger manifest export", "Crew roster sync", "Baggage reconciliation")
_CRUISE_M = 11_000.0
_SPEED_KMH = 780.0
_MAX_CONCURRENT = 8


@dataclass(frozen=True, slots=True)
class FeedOptions:
    url: str = "http://127.0.0.1:8000"
    api_key: str = "tandem-dev-key"
    duration_s: float = 120.0
    flights: int = 50
    seed: int = 1
    tick_s: float = 1.0
    # Simulated minutes per real second: 2 turns a two-minute run into four hours of airport.
    speed: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError("duration must be between 0 and 86400 seconds")
        if not 1 <= self.flights <= 200:
            raise ValueError("flights must be between 1 and 200")
        if not 0.05 <= self.tick_s <= 60 or not 0.1 <= self.speed <= 120:
            raise ValueError("tick must be 0.05-60 s and speed 0.1-120 simulated min/s")


@dataclass
class FeedStats:
    flight_updates: int = 0
    positions: int = 0
    notifications: int = 0
    jobs: int = 0
    errors: int = 0

    def summary(self) -> str:
        return (
            f"{self.flight_updates} flight updates, {self.positions} position reports, "
            f"{self.notifications} notifications, {self.jobs} jobs, {self.errors} errors"
        )


@dataclass
class SimFlight:
    """One departure and the moments (simulated time) when something happens to it."""

    id: str
    number: str
    destination: str
    std: datetime
    block: timedelta  # scheduled flight time
    gate: str
    terminal: str
    followers: tuple[str, ...]
    plan: list[tuple[datetime, str]] = field(default_factory=list)  # (when, what), sorted
    delay: int = 0
    status: str = "scheduled"
    departed_at: datetime | None = None

    @property
    def etd(self) -> datetime:
        return self.std + timedelta(minutes=self.delay)

    def initial(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "date": self.std.date().isoformat(),
            "origin": HUB,
            "destination": self.destination,
            "scheduled_departure": self.std,
            "estimated_departure": self.std,
            "actual_departure": None,
            "scheduled_arrival": self.std + self.block,
            "estimated_arrival": self.std + self.block,
            "actual_arrival": None,
            "gate": self.gate,
            "terminal": self.terminal,
            "status": "scheduled",
            "delay_minutes": 0,
            "position": None,
        }


Notify = tuple[str, str, str]  # (type, title, body) for the flight's followers


class Airport:
    """The simulation: flights and their plans, advanced by `step(now)`; no I/O."""

    def __init__(self, rng: random.Random, start: datetime, count: int, span: timedelta) -> None:
        self._rng = rng
        self.start = start
        numbers = rng.sample(range(100, 9000), count)
        self.flights = [self._flight(start, span, number) for number in numbers]
        self.flights.sort(key=lambda f: f.std)

    def _flight(self, start: datetime, span: timedelta, number: int) -> SimFlight:
        rng = self._rng
        destination = rng.choice([code for code in _AIRPORTS if code != HUB])
        # Some left a little before the feed starts, most within the first 60 % of it.
        std = start + timedelta(minutes=round(rng.uniform(-20, 0.6 * span.total_seconds() / 60)))
        std = std.replace(second=0, microsecond=0) - timedelta(minutes=std.minute % 5)
        flight = SimFlight(
            id=f"{rng.choice(_AIRLINES)}{number}-{std:%Y%m%d}",
            number="",
            destination=destination,
            std=std,
            block=timedelta(minutes=round(_distance_km(HUB, destination) / _SPEED_KMH * 60 + 25)),
            gate=f"{rng.choice(_PIERS)}{rng.randint(1, 36)}",
            terminal=str(rng.randint(1, 3)),
            followers=tuple(u for u in USERS if rng.random() < 0.25),
        )
        flight.number = flight.id.split("-")[0]
        plan = [(std - timedelta(minutes=30), "board"), (std, "depart")]
        if rng.random() < 0.15:
            plan.append((std - timedelta(minutes=rng.randint(35, 90)), "gate"))
        for _ in range(2 if rng.random() < 0.1 else 1 if rng.random() < 0.3 else 0):
            plan.append((std - timedelta(minutes=rng.randint(15, 90)), "delay"))
        if rng.random() < 0.04:
            plan.append((std - timedelta(minutes=rng.randint(5, 60)), "cancel"))
        if rng.random() < 0.03:
            plan.append((std + flight.block * 0.6, "divert"))
        flight.plan = sorted(plan)
        return flight

    def step(self, now: datetime) -> list[tuple[SimFlight, dict[str, Any], Notify | None]]:
        """The changes due by ``now``: (flight, fields, notification or None)."""
        changes = []
        for flight in self.flights:
            fields: dict[str, Any] = {}
            notify: Notify | None = None
            while flight.plan and flight.plan[0][0] <= now:
                _, what = flight.plan.pop(0)
                notify = self._apply(flight, what, now, fields) or notify
            if flight.status == "departed":
                if now >= flight.departed_at + flight.block:  # type: ignore[operator]
                    flight.status = "landed"
                    fields.update(status="landed", actual_arrival=now, position=None)
                    notify = ("success", f"{flight.number} has landed", self._route(flight))
                elif not fields:
                    fields["position"] = self._position(flight, now)
            if fields:
                changes.append((flight, fields, notify))
        return changes

    def _apply(
        self, flight: SimFlight, what: str, now: datetime, fields: dict[str, Any]
    ) -> Notify | None:
        rng = self._rng
        if flight.status in ("cancelled", "landed", "diverted"):
            return None
        if what == "gate" and flight.status in ("scheduled", "delayed"):
            old, flight.gate = flight.gate, f"{rng.choice(_PIERS)}{rng.randint(1, 36)}"
            fields["gate"] = flight.gate
            return ("warning", f"Gate change for {flight.number}", f"Now {flight.gate} (was {old})")
        if what == "delay" and flight.status in ("scheduled", "delayed"):
            minutes = rng.choice(_DELAYS)
            flight.delay += minutes
            flight.status = "delayed"
            # Boarding, departure and what happens in the air move with the delay.
            later = timedelta(minutes=minutes)
            flight.plan = sorted(
                (when + later if name in ("board", "depart", "divert") else when, name)
                for when, name in flight.plan
            )
            fields.update(
                status="delayed",
                delay_minutes=flight.delay,
                estimated_departure=flight.etd,
                estimated_arrival=flight.etd + flight.block,
            )
            return ("warning", f"{flight.number} delayed {flight.delay} min", self._etd(flight))
        if what == "cancel" and flight.status in ("scheduled", "delayed", "boarding"):
            flight.status = "cancelled"
            fields.update(status="cancelled", gate=None)
            return ("error", f"{flight.number} is cancelled", self._route(flight))
        if what == "board" and flight.status in ("scheduled", "delayed"):
            flight.status = "boarding"
            fields["status"] = "boarding"
            return ("action", f"Boarding: {flight.number}", f"Gate {flight.gate}, go now")
        if what == "depart" and flight.status in ("boarding", "delayed", "scheduled"):
            flight.status, flight.departed_at = "departed", now
            fields.update(
                status="departed",
                actual_departure=now,
                estimated_arrival=now + flight.block,
                position=self._position(flight, now),
            )
        if what == "divert" and flight.status == "departed":
            flight.status = "diverted"
            fields.update(status="diverted", position=None)
            return ("error", f"{flight.number} diverted", "Weather at the destination")
        return None

    def _position(self, flight: SimFlight, now: datetime) -> dict[str, float]:
        assert flight.departed_at is not None
        done = (now - flight.departed_at) / flight.block
        (lat0, lon0), (lat1, lon1) = _AIRPORTS[HUB], _AIRPORTS[flight.destination]
        minutes_left = (1 - done) * flight.block.total_seconds() / 60
        climb = min(1.0, done * flight.block.total_seconds() / 60 / 20, minutes_left / 25)
        heading = math.degrees(math.atan2(lon1 - lon0, lat1 - lat0)) % 360
        return {
            "lat": round(lat0 + (lat1 - lat0) * done, 4),
            "lon": round(lon0 + (lon1 - lon0) * done, 4),
            "altitude": round(max(0.0, climb) * _CRUISE_M),
            "heading": round(heading, 1),
        }

    def _route(self, flight: SimFlight) -> str:
        return f"{HUB} → {flight.destination}, scheduled {_local(flight.std)}"

    def _etd(self, flight: SimFlight) -> str:
        return f"New departure {_local(flight.etd)} (scheduled {_local(flight.std)})"


class Feed:
    """Drives an `Airport` (and demo users' notifications and jobs) through the HTTP API."""

    def __init__(self, api: ServerAPI, options: FeedOptions, now: Callable[[], datetime]) -> None:
        self._api = api
        self._options = options
        self._now = now
        self._rng = random.Random(options.seed)
        self._limit = asyncio.Semaphore(_MAX_CONCURRENT)
        self._jobs: dict[str, int] = {}  # running job id -> progress
        self._job_number = 0
        self._sent: dict[str, datetime] = {}  # flight id -> last provider_ts sent
        self.stats = FeedStats()

    async def run(self) -> FeedStats:
        options = self._options
        loop = asyncio.get_running_loop()
        started, start = loop.time(), self._now().replace(microsecond=0)
        span = timedelta(minutes=options.duration_s * options.speed)
        airport = Airport(self._rng, start, options.flights, span)
        # The board first, all at once; the first call also tells whether the server is there.
        first, *rest = airport.flights
        await self._put(first, first.initial(), strict=True)
        await asyncio.gather(*(self._put(f, f.initial()) for f in rest))
        await self._notify(USERS, "info", "The departures board is live", f"{len(USERS)} users")
        ticks = 0
        while (elapsed := loop.time() - started) < options.duration_s:
            sim_now = start + timedelta(minutes=elapsed * options.speed)
            work = [self._change(f, fields, note) for f, fields, note in airport.step(sim_now)]
            await asyncio.gather(*work, self._job_tick(ticks))
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * options.tick_s - loop.time()))
        await self._finish_jobs()
        return self.stats

    async def _change(self, flight: SimFlight, fields: dict[str, Any], note: Notify | None) -> None:
        await self._put(flight, fields)
        if set(fields) == {"position"}:
            self.stats.positions += 1
        if note is not None and flight.followers:
            kind, title, body = note
            await self._notify(flight.followers, kind, title, body, link=f"#flight-{flight.id}")

    async def _put(self, flight: SimFlight, fields: dict[str, Any], strict: bool = False) -> None:
        # The provider's clock: strictly increasing per flight, so no update looks stale.
        at = max(self._now(), self._sent.get(flight.id, self._now()) + timedelta(microseconds=1))
        self._sent[flight.id] = at
        async with self._limit:
            try:
                await self._api.flights.put(flight.id, provider_ts=at, **fields)
                self.stats.flight_updates += 1
            except TandemError as exc:
                if strict:
                    raise
                self._failed(f"flight {flight.id}", exc)

    async def _notify(
        self, users: tuple[str, ...], kind: str, title: str, body: str, link: str | None = None
    ) -> None:
        async with self._limit:
            try:
                sent = await self._api.notifications.send(
                    list(users), title, type=kind, body=body, link=link
                )
                self.stats.notifications += len(sent)
            except TandemError as exc:
                self._failed("notification", exc)

    async def _job_tick(self, tick: int) -> None:
        """Every so often a report export starts for a demo user and reports progress."""
        rng = self._rng
        if len(self._jobs) < 2 and (tick % 10 == 2 or rng.random() < 0.03):
            self._job_number += 1
            owner = rng.choice(USERS)
            try:
                created = await self._api.jobs.create(owner, "report")
                self._jobs[created.job.id] = 0
                self.stats.jobs += 1
            except TandemError as exc:
                self._failed("job", exc)
        for job_id, progress in list(self._jobs.items()):
            step = rng.randint(4, 18)
            try:
                if progress + step >= 100:
                    del self._jobs[job_id]
                    await self._api.jobs.complete(job_id, {"rows": rng.randint(100, 5000)})
                else:
                    self._jobs[job_id] = progress + step
                    stage = _REPORTS[self._job_number % len(_REPORTS)]
                    await self._api.jobs.progress(job_id, progress + step, message=stage)
            except TandemError as exc:
                self._jobs.pop(job_id, None)
                self._failed(f"job {job_id}", exc)

    async def _finish_jobs(self) -> None:
        """No job is left running when the feed stops."""
        for job_id in list(self._jobs):
            try:
                await self._api.jobs.cancel(job_id)
            except TandemError as exc:
                self._failed(f"job {job_id}", exc)
        self._jobs.clear()

    def _failed(self, what: str, exc: TandemError) -> None:
        self.stats.errors += 1
        log.warning("demo feed: %s: %s", what, exc)


async def run_feed(options: FeedOptions) -> FeedStats:
    """Feed the server at ``options.url`` until ``options.duration_s`` has passed.

    Raises:
        TandemError: The server refused or could not be reached for the very first update.
    """
    async with ServerAPI(options.url, options.api_key, max_attempts=3) as api:
        return await Feed(api, options, lambda: datetime.now(UTC)).run()


def _local(moment: datetime) -> str:
    """Hub time, as on the board."""
    return f"{moment.astimezone(ZoneInfo(HUB_TIME_ZONE)):%H:%M}"


def _distance_km(a: str, b: str) -> float:
    (lat1, lon1), (lat2, lon2) = (map(math.radians, _AIRPORTS[code]) for code in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2
    h += math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(h))
