"""FlightService on real databases: create, changes, stale updates, history, deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from domain.errors import InvalidPayload, NotFound
from domain.flights import FlightQuery, FlightService, FlightUpdate
from storage.database import Database
from storage.tables import FlightHistoryRow, OutboxRow
from tests.support.clock import StepClock

T0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
BASE = {"number": "TD101", "date": "2026-11-23", "origin": "ams", "destination": "LHR"}


@pytest.fixture
def service(units: Any) -> FlightService:
    return FlightService(units, StepClock())


async def outbox(db: Database, kind: str = "flight") -> list[tuple[str, str, dict[str, Any]]]:
    """The staged events of one kind of channel (a flight's own, or its airport's)."""
    async with db.sessions() as session:
        rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.channel, r.event, r.data) for r in rows if r.channel.startswith(f"{kind}:")]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def test_create_then_change_publishes_changes(service: FlightService, db: Database) -> None:
    created = await service.apply(
        FlightUpdate("td101", {**BASE, "scheduled_departure": at(60)}), at(0)
    )
    assert created.changed and created.flight.version == 1
    assert created.changes["origin"] == [None, "AMS"]
    assert created.changes["status"] == [None, "scheduled"]
    changed = await service.apply(
        FlightUpdate(
            "td101",
            {
                "gate": "D7",
                "status": "delayed",
                "delay_minutes": 25,
                "estimated_departure": "2026-11-23T10:25:00+01:00",
                "position": {"lat": 52.3, "lon": 4.76},
            },
        ),
        at(1),
    )
    assert changed.changed and changed.flight.version == 2
    assert changed.changes == {
        "estimated_departure": [None, "2026-11-23T09:25:00+00:00"],
        "gate": [None, "D7"],
        "status": ["scheduled", "delayed"],
        "delay_minutes": [0, 25],
        "position": [None, {"lat": 52.3, "lon": 4.76, "altitude": None, "heading": None}],
    }
    stored = await service.get("td101")
    assert stored == changed.flight
    assert stored.snapshot()["scheduled_departure"] == "2026-11-23T09:00:00+00:00"
    events = await outbox(db)
    assert [(c, e) for c, e, _ in events] == [("flight:td101", "flight.updated")] * 2
    assert events[1][2]["changes"] == changed.changes and events[1][2]["version"] == 2
    assert events[1][2]["gate"] == "D7"
    # The departures of its airport carry the same changes.
    departures = await outbox(db, "airport")
    assert [(c, e, d) for c, e, d in departures] == [
        ("airport:AMS", *event[1:]) for event in events
    ]


async def test_unchanged_and_stale_updates_publish_nothing(
    service: FlightService, db: Database
) -> None:
    await service.apply(FlightUpdate("td102", {**BASE, "gate": "B2"}), at(10))
    same = await service.apply(FlightUpdate("td102", {"gate": "B2", **BASE}), at(11))
    assert not same.changed and same.changes == {} and same.flight.version == 1
    # Out of order: an older provider state never moves the flight backwards.
    stale = await service.apply(FlightUpdate("td102", {"gate": "A1"}), at(5))
    assert not stale.changed and stale.flight.gate == "B2"
    # Older than the unchanged update's time too: that time was remembered.
    between = await service.apply(
        FlightUpdate("td102", {"gate": "C3"}),
        at(
            10,
        )
        + timedelta(seconds=30),
    )
    assert not between.changed
    assert (await service.get("td102")).gate == "B2"
    assert len(await outbox(db)) == 1


async def test_history_rows_per_changed_field(service: FlightService, db: Database) -> None:
    await service.apply(FlightUpdate("td103", BASE), at(0))
    await service.apply(FlightUpdate("td103", {"gate": "E1", "terminal": "2"}), at(1))
    await service.apply(FlightUpdate("td103", {"gate": "E2"}), at(2))
    await service.apply(FlightUpdate("td103", {"gate": None}), at(3))
    history = await service.history("td103")
    later = [(h.version, h.field, h.old, h.new) for h in history if h.version > 1]
    assert later == [
        (2, "gate", None, "E1"),
        (2, "terminal", None, "2"),
        (3, "gate", "E1", "E2"),
        (4, "gate", "E2", None),
    ]
    assert {h.field for h in history if h.version == 1} >= set(BASE)
    async with db.sessions() as session:
        count = len(list(await session.scalars(select(FlightHistoryRow))))
    assert count == len(history)


async def test_invalid_updates_store_nothing(service: FlightService, db: Database) -> None:
    with pytest.raises(InvalidPayload):
        await service.apply(FlightUpdate("td104", {"number": "X1"}), at(0))
    with pytest.raises(InvalidPayload):
        await service.apply(FlightUpdate("td104", {**BASE, "status": "lost"}), at(0))
    with pytest.raises(InvalidPayload):
        await service.apply(FlightUpdate("td104", {**BASE, "position": {"lat": 91}}), at(0))
    with pytest.raises(NotFound):
        await service.get("td104")
    await service.apply(FlightUpdate("td104", BASE), at(0))
    with pytest.raises(InvalidPayload):
        await service.apply(FlightUpdate("td104", {"origin": None}), at(1))
    assert len(await outbox(db)) == 1


async def test_a_delivery_applies_once(service: FlightService, db: Database) -> None:
    updates = [(FlightUpdate("td105", BASE), at(0)), (FlightUpdate("td106", BASE), at(0))]
    expires = datetime(2026, 11, 23, 13, tzinfo=UTC)  # an hour after the StepClock's now
    first = await service.apply_delivery(updates, key="sig-1", expires_at=expires)
    assert first is not None and [a.changed for a in first] == [True, True]
    assert await service.apply_delivery(updates, key="sig-1", expires_at=expires) is None
    assert len(await outbox(db)) == 2
    # An expired claim is purged, so the key may be used again.
    past = datetime(2026, 11, 23, 11, tzinfo=UTC)
    await service.apply_delivery([], key="sig-2", expires_at=past)
    assert await service.apply_delivery([], key="sig-2", expires_at=expires) == []


async def test_position_only_changes_publish_flight_position(
    service: FlightService, db: Database
) -> None:
    await service.apply(FlightUpdate("td107", BASE), at(0))
    moved = await service.apply(
        FlightUpdate("td107", {"position": {"lat": 52.3, "lon": 4.7, "altitude": 1200.0}}), at(1)
    )
    assert moved.changed and moved.changes == {
        "position": [None, {"lat": 52.3, "lon": 4.7, "altitude": 1200.0, "heading": None}]
    }
    both = await service.apply(
        FlightUpdate("td107", {"position": {"lat": 52.4, "lon": 4.6}, "status": "departed"}),
        at(2),
    )
    assert set(both.changes) == {"position", "status"}
    events = await outbox(db)
    assert [e for _, e, _ in events] == ["flight.updated", "flight.position", "flight.updated"]
    position = events[1][2]
    assert position == {
        "id": "td107",
        "position": {"lat": 52.3, "lon": 4.7, "altitude": 1200.0, "heading": None},
        "version": 2,
        "provider_ts": at(1).isoformat(),
        "updated_at": moved.flight.updated_at.isoformat(),
    }
    # History keeps every change, positions included.
    fields = [(h.version, h.field) for h in await service.history("td107") if h.version > 1]
    assert fields == [(2, "position"), (3, "status"), (3, "position")]


async def test_find_lists_a_board_in_departure_order(service: FlightService) -> None:
    def flight(number: str, origin: str, minutes: int | None) -> FlightUpdate:
        departure = {} if minutes is None else {"scheduled_departure": at(minutes)}
        fields = {**BASE, "number": number, "origin": origin, **departure}
        return FlightUpdate(number.lower(), fields)

    for update in (
        flight("TD3", "AMS", 30),
        flight("TD1", "AMS", 10),
        flight("TD9", "LHR", 5),
        flight("TD2", "AMS", None),
        flight("TD4", "AMS", 120),
    ):
        await service.apply(update, at(0))
    board = await service.find(FlightQuery(origin="ams"))
    assert [f.number for f in board] == ["TD1", "TD3", "TD4", "TD2"]
    # Bounds in any time zone compare as UTC.
    cet = timezone(timedelta(hours=1))
    window = FlightQuery(
        departs_after=at(10).astimezone(cet), departs_before=at(120).astimezone(cet), limit=5
    )
    assert [f.number for f in await service.find(window)] == ["TD1", "TD3"]
    assert [f.number for f in await service.find(FlightQuery(limit=2))] == ["TD9", "TD1"]
    with pytest.raises(InvalidPayload):
        FlightQuery(limit=0)
    with pytest.raises(InvalidPayload):
        FlightQuery(departs_after=datetime(2026, 11, 23))
