"""Where domain events go: each topic of an event is a channel (built in realtime.channels)."""

from __future__ import annotations

from collections.abc import Iterable

from domain.events import DomainEvent
from realtime.channels import channel_name
from storage.outbox import OutboxMessage


def route_event(event: DomainEvent) -> Iterable[OutboxMessage]:
    for kind, ident in event.topics:
        yield OutboxMessage(channel_name(kind, ident), event.type, event.data)
