"""Who may do what on which channel (DESIGN section 3). Default deny."""

from __future__ import annotations

from realtime.channels import Channel, ChannelKind, grant_matches
from server.auth import Principal


def _granted(principal: Principal, channel: Channel) -> bool:
    if principal.admin:
        return True
    name = str(channel)
    return any(grant_matches(grant, name) for grant in principal.grants)


def can_subscribe(principal: Principal, channel: Channel) -> bool:
    if _granted(principal, channel):
        return True
    match channel.kind:
        case ChannelKind.USER:
            return channel.id == principal.sub
        case ChannelKind.FLIGHT:
            return True
        case _:
            # job: the owner check arrives with the job service; doc: with document members.
            return False


def can_publish_from_client(principal: Principal, channel: Channel) -> bool:
    """Clients publish only on kinds that allow it, and only where they are members."""
    return channel.policy.client_publish and _granted(principal, channel)
