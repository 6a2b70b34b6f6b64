"""Socket.IO v5 packets: their JSON encoding (with binary attachments) and msgpack's.

A packet is ``<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]``; a packet whose
data holds bytes is a BINARY_EVENT or BINARY_ACK whose bytes travel as separate binary
Engine.IO messages, each replaced in the JSON by ``{"_placeholder": true, "num": i}``. The
msgpack variant (socket.io-msgpack-parser) sends each packet as one binary message: a map
of ``type``, ``nsp``, ``data`` and ``id``, bytes included as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from server.transport.compact_json import JsonWire

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
DEFAULT_NAMESPACE = "/"
# Socket.IO clients send one attachment per bytes value in an event; a header announcing more
# than this is refused instead of buffering frames for it (CVE-2026-48804 in python-socketio
# was a header announcing millions).
MAX_ATTACHMENTS = 100
_MAX_ACK_ID = 10**15  # clients count acks from 0; JavaScript's integers end at 2**53


class PacketError(ValueError):
    """Input that is not a Socket.IO packet as the protocol defines it."""


@dataclass(slots=True)
class Packet:
    type: int
    namespace: str = DEFAULT_NAMESPACE
    data: Any = None
    id: int | None = None
    # Binary attachments still to come: the header's count, then what arrived.
    attachment_count: int = 0
    attachments: list[bytes] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.attachments) >= self.attachment_count

    def add_attachment(self, data: bytes) -> None:
        self.attachments.append(data)
        if self.complete:
            self.data = _reconstruct(self.data, self.attachments)


class Codec(Protocol):
    """Encodes packets into Engine.IO messages and decodes them back."""

    def encode(self, packet: Packet) -> list[str | bytes]: ...

    def decode(self, message: str | bytes) -> Packet: ...


class JsonCodec:
    """Socket.IO's default parser."""

    def __init__(self, wire: JsonWire) -> None:
        self.wire = wire

    def encode(self, packet: Packet) -> list[str | bytes]:
        head = str(packet.type)
        namespace = "" if packet.namespace == DEFAULT_NAMESPACE else packet.namespace + ","
        ack = "" if packet.id is None else str(packet.id)
        if packet.data is None:
            return [head + namespace + ack]
        try:
            return [head + namespace + ack + self.wire.encode(packet.data)]
        except TypeError:
            pass  # bytes in the data: attachments
        attachments: list[bytes] = []
        data = _deconstruct(packet.data, attachments)
        binary_type = BINARY_ACK if packet.type in (ACK, BINARY_ACK) else BINARY_EVENT
        text = f"{binary_type}{len(attachments)}-{namespace}{ack}{self.wire.encode(data)}"
        return [text, *attachments]

    def decode(self, message: str | bytes) -> Packet:
        if not isinstance(message, str):
            raise PacketError("a binary message where a packet was due")
        packet, start = self.header(message)
        if start < len(message):
            try:
                packet.data = self.wire.decode(message[start:])
            except (ValueError, RecursionError) as exc:
                raise PacketError(f"bad JSON: {exc}") from None
        if packet.attachment_count == 0 and packet.type in (BINARY_EVENT, BINARY_ACK):
            packet.data = _reconstruct(packet.data, [])
        return packet

    @staticmethod
    def header(message: str) -> tuple[Packet, int]:
        """The packet's header fields (no data yet), and where its JSON starts."""
        if not message or not "0" <= message[0] <= str(BINARY_ACK):
            raise PacketError("unknown packet type")
        kind = int(message[0])
        i = 1
        count = 0
        if kind in (BINARY_EVENT, BINARY_ACK):
            dash = message.find("-", 1, 8)
            digits = message[1:dash] if dash > 0 else ""
            if not digits.isdecimal():
                raise PacketError("bad attachment count")
            count = int(digits)
            if count > MAX_ATTACHMENTS:
                raise PacketError(f"{count} attachments announced")
            i = dash + 1
        namespace = DEFAULT_NAMESPACE
        if message.startswith("/", i):
            comma = message.find(",", i)
            end = comma if comma >= 0 else len(message)
            namespace = message[i:end]
            i = end + 1
        start = i
        while i < len(message) and "0" <= message[i] <= "9":
            i += 1
        ack_id = None
        if i > start:
            if i - start > 15:
                raise PacketError("ack id too long")
            ack_id = int(message[start:i])
        return Packet(kind, namespace, None, ack_id, count), i


class MsgPackCodec:
    """socket.io-msgpack-parser: one binary message per packet."""

    def encode(self, packet: Packet) -> list[str | bytes]:
        fields: dict[str, Any] = {"type": packet.type, "nsp": packet.namespace}
        # A DISCONNECT that carries ``data: None`` is refused by the JavaScript parser.
        if packet.data is not None:
            fields["data"] = packet.data
        if packet.id is not None:
            fields["id"] = packet.id
        encoded: bytes = msgpack.packb(fields)
        return [encoded]

    def decode(self, message: str | bytes) -> Packet:
        if isinstance(message, str):
            raise PacketError("a text message where a msgpack packet was due")
        try:
            fields = msgpack.unpackb(message, strict_map_key=False)
        except Exception as exc:  # msgpack raises a family of unrelated errors
            raise PacketError(f"bad msgpack: {exc}") from None
        if not isinstance(fields, dict):
            raise PacketError("a msgpack packet is a map")
        kind = fields.get("type")
        namespace = fields.get("nsp", DEFAULT_NAMESPACE)
        ack_id = fields.get("id")
        if (
            not isinstance(kind, int)
            or isinstance(kind, bool)
            or not CONNECT <= kind <= BINARY_ACK
            or not isinstance(namespace, str)
            or not (ack_id is None or (type(ack_id) is int and 0 <= ack_id < _MAX_ACK_ID))
        ):
            raise PacketError("bad msgpack packet fields")
        return Packet(kind, namespace, fields.get("data"), ack_id)


def _deconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        attachments.append(bytes(data))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(data, list | tuple):
        return [_deconstruct(item, attachments) for item in data]
    if isinstance(data, dict):
        return {key: _deconstruct(value, attachments) for key, value in data.items()}
    return data


def _reconstruct(data: Any, attachments: list[bytes]) -> Any:
    if isinstance(data, list):
        return [_reconstruct(item, attachments) for item in data]
    if isinstance(data, dict):
        if data.get("_placeholder") is True and len(data) == 2:
            num = data.get("num")
            if type(num) is not int or not 0 <= num < len(attachments):
                raise PacketError("placeholder for a missing attachment")
            return attachments[num]
        return {key: _reconstruct(value, attachments) for key, value in data.items()}
    return data
