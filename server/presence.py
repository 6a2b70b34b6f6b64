"""Reading a channel's presence, the same for the ``presence`` request and the HTTP API."""

from __future__ import annotations

from typing import Any

from domain.errors import BadRequest, PermissionDenied
from realtime.channels import POLICIES, Channel
from realtime.presence_tracker import PresenceTracker
from server.auth import Principal
from server.authz import Authorizer

PRESENCE_KINDS = ", ".join(f"{kind.value}:" for kind, policy in POLICIES.items() if policy.presence)


async def read_presence(
    tracker: PresenceTracker,
    authorizer: Authorizer,
    principal: Principal,
    channel: Channel,
    limit: int,
) -> dict[str, Any]:
    """``{channel, members: [{user, name, info, connections}], total}`` for whoever may
    subscribe to ``channel``."""
    if not channel.policy.presence:
        raise BadRequest(no_presence_message(channel))
    if not await authorizer.can_subscribe(principal, channel):
        raise PermissionDenied(f"not allowed to see who is on {channel}")
    presence = await tracker.members(str(channel), limit)
    return {
        "channel": str(channel),
        "members": [member.as_dict() for member in presence.members],
        "total": presence.total,
    }


def no_presence_message(channel: Channel) -> str:
    return f"{channel} has no presence; presence is kept on {PRESENCE_KINDS} channels"
