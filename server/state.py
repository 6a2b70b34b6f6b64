"""What a subscriber receives as ``state`` when it cannot (or did not ask to) recover.

Each stateful channel kind has a provider. Until a domain service owns a kind (jobs, flights,
notifications), its state is the channel's latest publication: a late subscriber still sees
the last value, like a cache channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from realtime.broker import Broker
from realtime.channels import Channel, ChannelKind

StateProvider = Callable[[Channel], Awaitable[Any]]


class ChannelState:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._providers: dict[ChannelKind, StateProvider] = {}

    def register(self, kind: ChannelKind, provider: StateProvider) -> None:
        self._providers[kind] = provider

    async def __call__(self, channel: Channel) -> Any:
        provider = self._providers.get(channel.kind)
        if provider is not None:
            return await provider(channel)
        if channel.policy.stateful:
            return await self.latest(channel)
        return None

    async def latest(self, channel: Channel) -> Any:
        """The channel's newest retained publication as ``{"latest": envelope}``, or None."""
        history = await self._broker.history(str(channel), limit=1)
        if not history.publications:
            return None
        return {"latest": history.publications[-1].envelope()}
