"""What a subscriber saw, checked against what publishers were told (notes 1.8)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from client_sdk import Client, Message, Resync


@dataclass
class Watch:
    """Everything one SDK subscription yields, with arrival times."""

    items: list[Message | Resync] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, item: Message | Resync) -> None:
        self.items.append(item)
        self.arrivals.append(time.monotonic())
        self.changed.set()

    async def until(self, count: int) -> None:
        """Wait until ``count`` messages have arrived (bound it with asyncio.timeout)."""
        while len(self.messages) < count:
            self.changed.clear()
            await self.changed.wait()

    @property
    def messages(self) -> list[Message]:
        return [item for item in self.items if isinstance(item, Message)]

    @property
    def resyncs(self) -> list[Resync]:
        return [item for item in self.items if isinstance(item, Resync)]

    def values(self) -> list[Any]:
        return [m.data["i"] for m in self.messages]

    def assert_no_silent_gap(self) -> None:
        """Offsets advance by one within an epoch; any jump is announced by a Resync."""
        last: tuple[str, int] | None = None
        for item in self.items:
            if isinstance(item, Resync):
                last = (item.epoch, item.offset)
                continue
            if last is not None:
                assert (item.epoch, item.offset) == (last[0], last[1] + 1), (
                    f"silent gap: {last} -> {item.epoch}/{item.offset}"
                )
            last = (item.epoch, item.offset)

    def first_arrival_after(self, moment: float) -> float | None:
        later = [t for t in self.arrivals if t >= moment]
        return min(later) if later else None


async def watch(client: Client, channel: str, sink: Watch, ready: asyncio.Event) -> None:
    async with client.subscribe(channel) as sub:
        ready.set()
        async for item in sub:
            sink.add(item)
