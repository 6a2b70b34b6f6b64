"""python-socketio, extended through its seams: packet class and a server subclass.

Tested against python-socketio 5.18.1 / python-engineio 4.15.1 (pinned in constraints.txt):
``_handle_eio_message`` and ``_binary_packet`` are that version's internals.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import socketio
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

from domain.errors import ErrorCode
from server.errors import error_ack

log = logging.getLogger(__name__)

# Called with the engine.io session id of a client that sent too many malformed packets.
AbuseHook = Callable[[str], Awaitable[None]]
CountHook = Callable[[str], None]
_ERROR_WINDOW_S = 60.0


class CompatMsgPackPacket(MsgPackPacket):  # type: ignore[misc]
    """Drop ``data: None``: socket.io-msgpack-parser rejects a DISCONNECT that carries data."""

    def encode(self) -> bytes:
        fields = self._to_dict()
        if fields.get("data") is None:
            fields.pop("data", None)
        encoded: bytes = msgpack.dumps(fields, default=self.__class__.dumps_default)
        return encoded


class TandemSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """Counts malformed packets instead of logging tracebacks, and answers oversized events."""

    def __init__(
        self,
        *,
        max_payload_bytes: int,
        protocol_error_limit: int,
        count_error: CountHook,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._max_payload = max_payload_bytes
        self._error_limit = protocol_error_limit
        self._count_error = count_error
        # Set by whoever owns the connections (the gateway); by default the client is dropped.
        self.on_abuse: AbuseHook = self.eio.disconnect
        self._errors: dict[str, deque[float]] = {}
        # Attachments still to swallow after an oversized binary event was refused.
        self._discard_attachments: dict[str, int] = {}

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        try:
            if self._discard_attachments.get(eio_sid):
                self._discard_attachments[eio_sid] -= 1
                return
            if len(data) > self._max_payload:
                await self._refuse_oversized(eio_sid, data)
                return
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            await self._protocol_error(eio_sid, exc)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._discard_attachments.pop(eio_sid, None)
        self._errors.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _protocol_error(self, eio_sid: str, exc: Exception) -> None:
        """Count, log once per client, and cut off a client that keeps sending garbage."""
        self._count_error(type(exc).__name__)
        errors = self._errors.get(eio_sid)
        if errors is None:
            errors = self._errors[eio_sid] = deque(maxlen=self._error_limit)
            log.warning("malformed packet from %s: %r", eio_sid, exc)
        now = time.monotonic()
        errors.append(now)
        if len(errors) >= self._error_limit and now - errors[0] <= _ERROR_WINDOW_S:
            self._errors.pop(eio_sid, None)
            await self.on_abuse(eio_sid)

    async def _refuse_oversized(self, eio_sid: str, data: str | bytes) -> None:
        pending = self._binary_packet.pop(eio_sid, None)
        if pending is not None:
            # An attachment of a binary event: the event is refused as a whole.
            remaining = len(pending.attachments) + 1
            self._discard_attachments[eio_sid] = pending.attachment_count - remaining
            pkt = pending
        else:
            pkt = self.packet_class(encoded_packet=data)
            if pkt.packet_type == sio_packet.BINARY_EVENT and pkt.attachment_count:
                self._discard_attachments[eio_sid] = pkt.attachment_count
        if pkt.packet_type in (sio_packet.EVENT, sio_packet.BINARY_EVENT) and pkt.id is not None:
            ack = error_ack(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"event payload is over the {self._max_payload}-byte limit",
            )
            await self._send_packet(
                eio_sid,
                self.packet_class(sio_packet.ACK, namespace=pkt.namespace, id=pkt.id, data=[ack]),
            )
        self._count_error("payload_too_large")

    def eio_sid_of(self, sid: str) -> str | None:
        eio_sid: str | None = self.manager.eio_sid_from_sid(sid, "/")
        return eio_sid

    def sid_of(self, eio_sid: str) -> str | None:
        sid: str | None = self.manager.sid_from_eio_sid(eio_sid, "/")
        return sid
