"""The events a flight change publishes.

Every change publishes ``flight.updated`` with the snapshot and ``changes: {field: [old,
new]}``, except when only the aircraft position moved: then the much smaller
``flight.position`` (id, position, version) goes out instead. Positions are a latest-value
stream (a slow client may skip to the newest one), status changes are not, so they travel as
different event types.

``flight.updated`` also goes to ``airport:<origin>``, the departures of that airport: a board
learns of a new flight, or one moved to another airport, the moment it changes. Positions do
not: a board that wants them follows the flight's own channel.
"""

from __future__ import annotations

from domain.events import DomainEvent
from domain.flight import Changes, Flight


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
