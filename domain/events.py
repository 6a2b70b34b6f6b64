"""Domain events and the seam that carries them out of a transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """A fact that happened to an aggregate, committed with the change that caused it.

    ``type`` is the wire event type (``job.progress``); ``data`` its JSON payload;
    ``topics`` name who it concerns (``("job", "42")``, ``("user", "alice")``), which the
    server turns into channels.
    """

    type: str
    data: dict[str, Any]
    topics: tuple[tuple[str, str], ...]


class EventSink(Protocol):
    """Collects events inside a unit of work; they are published only if it commits."""

    def emit(self, event: DomainEvent) -> None: ...
