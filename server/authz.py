"""Who may do what on which channel (DESIGN section 3). Default deny."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from realtime.channels import Channel, ChannelKind, grant_matches
from server.auth import Principal

# The owner of the aggregate behind a channel (a job's owner), or None when there is none.
OwnerLookup = Callable[[Channel], Awaitable[str | None]]


def _granted(principal: Principal, channel: Channel) -> bool:
    if principal.admin:
        return True
    name = str(channel)
    return any(grant_matches(grant, name) for grant in principal.grants)


def can_publish_from_client(principal: Principal, channel: Channel) -> bool:
    """Clients publish only on kinds that allow it, and only where they are members."""
    return channel.policy.client_publish and _granted(principal, channel)


class Authorizer:
    def __init__(self, owners: dict[ChannelKind, OwnerLookup]) -> None:
        self._owners = owners

    async def can_subscribe(self, principal: Principal, channel: Channel) -> bool:
        if _granted(principal, channel):
            return True
        match channel.kind:
            case ChannelKind.USER:
                return channel.id == principal.sub
            case ChannelKind.FLIGHT:
                return True
        lookup = self._owners.get(channel.kind)
        # Unknown aggregates and other people's are denied alike: existence does not leak.
        return lookup is not None and await lookup(channel) == principal.sub
