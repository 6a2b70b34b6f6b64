"""One Engine.IO session: its transport (long-polling or a websocket) and its state.

Packets for a long-polling session wait in ``polled`` for the client's next GET; a websocket
session writes each packet as one frame to its ``Outbound`` (in order with the fan-out's
frames, batched per event-loop turn, bounded). The Socket.IO connection riding on the session
keeps its few fields here too: one object per connection keeps an idle one small.
"""

from __future__ import annotations

import asyncio
import binascii
from collections import deque
from typing import Any

from server.transport.frames import engineio_frame
from server.transport.outbound import Outbound
from server.transport.websocket import Socket

POLLING = "polling"
WEBSOCKET = "websocket"
# Engine.IO packet types (OPEN is "0", sent once in the handshake).
CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "1", "2", "3", "4", "5", "6"
PACKET_TYPES = frozenset("0123456")


class Session:
    __slots__ = (
        "sid",
        "environ",
        "transport",
        "polled",
        "poll",
        "posting",
        "upgrading",
        "outbound",
        "socket",
        "backlog",
        "closed",
        "beat",
        "awaiting_pong",
        # The Socket.IO connection on this session (server.transport.sockets).
        "sio_sid",
        "partial",
        "partial_bytes",
        "discard",
        "errors",
    )

    def __init__(self, sid: str, environ: dict[str, Any], transport: str) -> None:
        self.sid = sid
        self.environ = environ
        self.transport = transport
        # Long-polling: encoded packets for the next GET, and that GET while it waits.
        self.polled: list[str | bytes] = []
        self.poll: asyncio.Future[None] | None = None
        self.posting = False
        self.upgrading = False
        # Websocket: where its frames go, and the socket.
        self.outbound: Outbound | None = None
        self.socket: Socket | None = None
        # Messages waiting behind one whose handling is awaited; None stands for the end.
        self.backlog: list[str | bytes | None] | None = None
        self.closed = False
        self.beat = 0
        self.awaiting_pong = False
        self.sio_sid: str | None = None
        self.partial: Any = None  # a binary packet still collecting its attachments
        self.partial_bytes = 0
        self.discard = 0  # attachments of a refused binary packet still to swallow
        self.errors: deque[float] | None = None

    def send(self, encoded: str | bytes) -> None:
        """Send one encoded Engine.IO packet: text (``"4..."``, ``"2"``) or a binary
        message."""
        if self.closed:
            return
        outbound = self.outbound
        if outbound is not None:
            outbound.write(engineio_frame(encoded))
            return
        self.polled.append(encoded)
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    def take_polled(self) -> bytes:
        """The long-polling payload of what waits: packets joined by 0x1e, binary ones as
        ``b`` + base64."""
        packets, self.polled = self.polled, []
        return b"\x1e".join(
            p.encode() if isinstance(p, str) else b"b" + binascii.b2a_base64(p, newline=False)
            for p in packets
        )
