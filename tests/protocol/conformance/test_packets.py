"""Socket.IO packet encoding, as the specification's examples write it."""

from __future__ import annotations

import pytest

from server.transport.compact_json import JsonWire
from server.transport.packets import (
    ACK,
    BINARY_EVENT,
    CONNECT,
    EVENT,
    JsonCodec,
    MsgPackCodec,
    Packet,
    PacketError,
)

CODEC = JsonCodec(JsonWire())


@pytest.mark.parametrize(
    ("packet", "encoded"),
    [
        (Packet(CONNECT, "/", {"token": "123"}), ['0{"token":"123"}']),
        (Packet(CONNECT, "/admin", {"token": "123"}), ['0/admin,{"token":"123"}']),
        (Packet(EVENT, "/", ["foo"]), ['2["foo"]']),
        (Packet(EVENT, "/admin", ["bar"]), ['2/admin,["bar"]']),
        (Packet(ACK, "/admin", ["bar"], 13), ['3/admin,13["bar"]']),
        (
            Packet(EVENT, "/", ["baz", b"\x01\x02\x03\x04"]),
            ['51-["baz",{"_placeholder":true,"num":0}]', b"\x01\x02\x03\x04"],
        ),
        (
            Packet(ACK, "/admin", [b"\x03"], 15),
            ['61-/admin,15[{"_placeholder":true,"num":0}]', b"\x03"],
        ),
    ],
)
def test_the_specifications_examples_round_trip(packet: Packet, encoded: list[str | bytes]) -> None:
    """SIO "Packet encoding" examples: encoded as written, and decoded back."""
    assert CODEC.encode(packet) == encoded
    decoded = CODEC.decode(encoded[0])
    for attachment in encoded[1:]:
        assert isinstance(attachment, bytes)
        decoded.add_attachment(attachment)
    assert (decoded.namespace, decoded.data, decoded.id) == (
        packet.namespace,
        packet.data,
        packet.id,
    )
    assert decoded.type == (packet.type if len(encoded) == 1 else packet.type + 3)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "9",
        "2[",
        "5-[]",
        "5x-[]",
        "5101-[]",
        '51-[{"_placeholder":true,"num":7}]',
        "2" + "1" * 16 + "[]",
    ],
)
def test_what_is_not_a_packet_is_refused(bad: str) -> None:
    with pytest.raises(PacketError):
        packet = CODEC.decode(bad)
        packet.add_attachment(b"x")  # a placeholder naming an attachment that never comes


def test_msgpack_packets_round_trip_and_refuse_garbage() -> None:
    codec = MsgPackCodec()
    packet = Packet(EVENT, "/", ["e", {"b": b"\x00"}], 7)
    [encoded] = codec.encode(packet)
    decoded = codec.decode(encoded)
    assert (decoded.type, decoded.namespace, decoded.data, decoded.id) == (
        EVENT,
        "/",
        ["e", {"b": b"\x00"}],
        7,
    )
    for bad in (b"\xc1", b"\x93\x01\x02\x03", "text"):
        with pytest.raises(PacketError):
            codec.decode(bad)
    assert BINARY_EVENT == 5
