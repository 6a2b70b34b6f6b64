"""Per-connection state kept by this node: who it is, its limits and its expiry timer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from realtime.ratelimit import TokenBucket
from server.auth.tokens import Principal


@dataclass(eq=False, slots=True)
class Connection:
    sid: str
    principal: Principal
    bucket: TokenBucket
    # typing and status requests: a second, tighter limit on top of ``bucket``
    presence_bucket: TokenBucket
    transport: str = "unknown"
    # Channels subscribed to, by subscribe and subscribe_many alike (server.socket.gateway's
    # Subscriptions.charge_subscriptions); made on the first subscribe
    subscribe_bucket: TokenBucket | None = None
    # doc.* requests' limits, made on the first one (most connections never edit documents)
    doc_bucket: TokenBucket | None = None
    awareness_bucket: TokenBucket | None = None
    connected_at: float = field(default_factory=time.monotonic)
    # For operators (the admin API): when, from where and with what the client connected.
    connected_since: float = field(default_factory=time.time)
    address: str = ""
    user_agent: str = ""
    expiry: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
