"""SqlFlightRepository: flight status, its history and webhook deliveries; rows stay here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import Conflict
from domain.flight import Flight
from domain.flight_fields import TIMES, FlightStatus, Position
from domain.flights import FlightQuery, HistoryEntry
from storage.tables import Base, FlightHistoryRow, FlightRow, WebhookDeliveryRow

_FLIGHTS = Base.metadata.tables[FlightRow.__tablename__]
_HISTORY = Base.metadata.tables[FlightHistoryRow.__tablename__]
_DELIVERIES = Base.metadata.tables[WebhookDeliveryRow.__tablename__]
_C = _FLIGHTS.c


class SqlFlightRepository:
    """Core statements, like SqlJobRepository: one row per flight, history appended."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, flight_id: str) -> Flight | None:
        row = (await self._session.execute(select(_FLIGHTS).where(_C.id == flight_id))).first()
        return None if row is None else _to_flight(row)

    async def lock(self, flight_id: str) -> Flight | None:
        # FOR UPDATE on PostgreSQL; SQLite transactions are already exclusive (BEGIN IMMEDIATE).
        statement = select(_FLIGHTS).where(_C.id == flight_id).with_for_update()
        row = (await self._session.execute(statement)).first()
        return None if row is None else _to_flight(row)

    async def add(self, flight: Flight) -> None:
        try:
            await self._session.execute(insert(_FLIGHTS).values(**_columns(flight)))
        except IntegrityError:
            raise Conflict(f"flight {flight.id} was created concurrently") from None

    async def save(self, flight: Flight, expected_version: int) -> None:
        # The version check makes a lost update impossible even without the row lock.
        result = await self._session.execute(
            update(_FLIGHTS)
            .where(_C.id == flight.id, _C.version == expected_version)
            .values(**_columns(flight))
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"flight {flight.id} changed concurrently")

    async def record(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        await self._session.execute(
            insert(_HISTORY),
            [
                {
                    "flight_id": e.flight_id,
                    "version": e.version,
                    "field": e.field,
                    "old": e.old,
                    "new": e.new,
                    "provider_ts": e.provider_ts,
                    "created_at": e.created_at,
                }
                for e in entries
            ],
        )

    async def history(self, flight_id: str) -> list[HistoryEntry]:
        rows = await self._session.execute(
            select(_HISTORY)
            .where(_HISTORY.c.flight_id == flight_id)
            .order_by(_HISTORY.c.version, _HISTORY.c.id)
        )
        return [
            HistoryEntry(
                flight_id=row.flight_id,
                version=row.version,
                field=row.field,
                old=row.old,
                new=row.new,
                provider_ts=_aware(row.provider_ts),
                created_at=_aware(row.created_at),
            )
            for row in rows
        ]

    async def find(self, query: FlightQuery) -> list[Flight]:
        statement = select(_FLIGHTS)
        if query.origin is not None:
            statement = statement.where(_C.origin == query.origin)
        if query.departs_after is not None:
            statement = statement.where(_C.scheduled_departure >= query.departs_after)
        if query.departs_before is not None:
            statement = statement.where(_C.scheduled_departure < query.departs_before)
        # NULLs last on both engines (SQLite sorts them first by default), then by id.
        statement = statement.order_by(
            _C.scheduled_departure.is_(None), _C.scheduled_departure, _C.id
        ).limit(query.limit)
        return [_to_flight(row) for row in await self._session.execute(statement)]

    async def claim_delivery(self, key: str, now: datetime, expires_at: datetime) -> None:
        """Insert ``key``; Conflict when an unexpired claim holds it (expired ones are purged).
        Call it first in a transaction: a failed insert ends it on PostgreSQL."""
        await self._session.execute(delete(_DELIVERIES).where(_DELIVERIES.c.expires_at < now))
        try:
            await self._session.execute(insert(_DELIVERIES).values(key=key, expires_at=expires_at))
        except IntegrityError:
            raise Conflict("this delivery was already accepted") from None


def _columns(f: Flight) -> dict[str, object]:
    return {
        "id": f.id,
        "number": f.number,
        "date": f.date,
        "origin": f.origin,
        "destination": f.destination,
        **{name: getattr(f, name) for name in TIMES},
        "gate": f.gate,
        "terminal": f.terminal,
        "status": f.status.value,
        "delay_minutes": f.delay_minutes,
        "position": None if f.position is None else f.position.snapshot(),
        "provider_ts": f.provider_ts,
        "version": f.version,
        "updated_at": f.updated_at,
    }


def _to_flight(row: Row[Any]) -> Flight:
    times = {name: _aware_or_none(getattr(row, name)) for name in TIMES}
    return Flight(
        id=row.id,
        number=row.number,
        date=row.date,
        origin=row.origin,
        destination=row.destination,
        provider_ts=_aware(row.provider_ts),
        version=row.version,
        updated_at=_aware(row.updated_at),
        status=FlightStatus(row.status),
        gate=row.gate,
        terminal=row.terminal,
        delay_minutes=row.delay_minutes,
        position=None if row.position is None else Position(**row.position),
        **times,
    )


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
