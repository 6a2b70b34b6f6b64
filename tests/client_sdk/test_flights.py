"""Flights through the SDK: `api.flights` puts and lists, `client.flights.watch` follows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from client_sdk import (
    AircraftPosition,
    FlightStatus,
    InvalidPayload,
    NotFound,
    PermissionDenied,
    ServerAPI,
)
from tests.client_sdk.helpers import fast_client
from tests.support.live import API_KEY, LiveServer

WITHIN = 10.0
T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)


def new_id() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


def base(origin: str = "AMS") -> dict[str, object]:
    return {"number": "TD42", "date": T0.date(), "origin": origin, "destination": "LIS"}


async def test_put_get_and_list(server: LiveServer) -> None:
    flight, origin = new_id(), uuid.uuid4().hex[:6].upper()
    async with ServerAPI(server.url, API_KEY, max_attempts=1) as api:
        created = await api.flights.put(
            flight, provider_ts=T0, scheduled_departure=T0 + timedelta(hours=2), **base(origin)
        )
        assert created.changed and created.flight.version == 1
        assert created.flight.status is FlightStatus.SCHEDULED
        assert created.flight.scheduled_departure == T0 + timedelta(hours=2)
        same = await api.flights.put(flight, provider_ts=T0, number="TD42")
        assert not same.changed and same.changes == {}
        moved = await api.flights.put(
            flight, provider_ts=T0 + timedelta(minutes=1), gate="B7", delay_minutes=15
        )
        assert moved.changes == {"gate": [None, "B7"], "delay_minutes": [0, 15]}
        assert await api.flights.get(flight) == moved.flight
        earlier = new_id()
        await api.flights.put(
            earlier, provider_ts=T0, scheduled_departure=T0 + timedelta(hours=1), **base(origin)
        )
        board = await api.flights.list(origin=origin.lower())
        assert [f.id for f in board] == [earlier, flight]
        later = await api.flights.list(origin=origin, departs_after=T0 + timedelta(minutes=90))
        assert [f.id for f in later] == [flight]
        with pytest.raises(NotFound):
            await api.flights.get(new_id())
        with pytest.raises(InvalidPayload):
            await api.flights.put(new_id(), gate="A1")  # a new flight needs number, date, ...
        with pytest.raises(InvalidPayload):
            await api.flights.put(flight, wings=2)
    async with ServerAPI(server.url, server.token("reader"), max_attempts=1) as reader:
        assert (await reader.flights.get(flight)).gate == "B7"
        with pytest.raises(PermissionDenied):
            await reader.flights.put(flight, gate="Z9")


async def test_watch_applies_snapshots_and_positions_by_version(server: LiveServer) -> None:
    flight = new_id()
    async with ServerAPI(server.url, API_KEY) as api:
        await api.flights.put(flight, provider_ts=T0, **base())
        async with (
            fast_client(server.url, server.token("watcher")) as client,
            client.flights.watch(flight) as updates,
        ):
            first = await anext(updates)
            assert first.version == 1 and first.position is None
            at = T0
            for i in range(3):
                at += timedelta(seconds=30)
                position = AircraftPosition(52.0 + i / 10, 4.0, altitude=9000.0, heading=180.0)
                await api.flights.put(flight, provider_ts=at, position=position)
            await api.flights.put(flight, provider_ts=at + timedelta(seconds=1), status="landed")
            seen = []
            async with asyncio.timeout(WITHIN):
                async for state in updates:
                    seen.append(state)
                    if state.status is FlightStatus.LANDED:
                        break
        assert [s.version for s in seen] == [2, 3, 4, 5]
        assert seen[2].position == AircraftPosition(52.2, 4.0, 9000.0, 180.0)
        # A position move keeps every other field of the last snapshot.
        assert seen[2].number == "TD42" and seen[2].status is FlightStatus.SCHEDULED
        assert seen[-1] == await api.flights.get(flight)


async def test_watching_an_unknown_flight_is_not_found(server: LiveServer) -> None:
    async with fast_client(server.url, server.token("watcher")) as client:
        with pytest.raises(NotFound):
            async with client.flights.watch(new_id()):
                pass
