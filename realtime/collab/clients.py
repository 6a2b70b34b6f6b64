"""How the engine reaches this node's own connections: the ``Send`` callable it is given and
the payload of the ``doc.update`` / ``doc.awareness`` events it sends through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from realtime.collab.room import Room

# Sends ``event`` with ``payload`` to each of these local connections.
Send = Callable[[str, dict[str, Any], Collection[str]], Awaitable[None]]


def doc_payload(room: Room, update: bytes) -> dict[str, Any]:
    return {"doc": room.doc_id, "update": update}
