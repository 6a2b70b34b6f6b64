"""What a subscriber receives as ``state`` when it cannot (or did not ask to) recover.

The built-in namespaces whose channels have a state (jobs, flights, a user's inbox) each have
a provider, keyed by the namespace's name; other namespaces have none (``state: null``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from realtime.broker import Broker
from realtime.channels import Channel

StateProvider = Callable[[Channel], Awaitable[Any]]


class ChannelState:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._providers: dict[str, StateProvider] = {}

    def register(self, namespace: str, provider: StateProvider) -> None:
        self._providers[namespace] = provider

    async def __call__(self, channel: Channel) -> Any:
        provider = self._providers.get(channel.kind)
        return None if provider is None else await provider(channel)

    async def latest(self, channel: Channel) -> Any:
        """The channel's newest retained publication as ``{"latest": envelope}``, or None."""
        history = await self._broker.history(str(channel), limit=1)
        if not history.publications:
            return None
        return {"latest": history.publications[-1].envelope()}
