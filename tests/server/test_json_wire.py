"""JsonWire writes the JSON python-socketio would (read back equal), faster, and refuses the
same things: bytes (a binary packet is due) and, reading, integers over 100 digits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.transport.compact_json import JsonWire

wire = JsonWire()


@pytest.mark.parametrize(
    "value",
    [
        ["chat.message", {"channel": "room:x", "offset": 7, "data": {"text": "héllo ✓ 😀"}}],
        ["job.progress", {"data": {"progress": 12.5, "ok": True, "none": None, "list": [1, []]}}],
        ["e", {"big": 10**30, "negative": -(10**40)}],  # over 64 bits: json writes them
        ["e", {1: "int key", "nested": {2: [3]}}],  # json turns the keys into strings
        [{"ok": False, "error": {"code": "rate_limited", "retryable": True}}],
    ],
)
def test_what_it_writes_reads_back_as_python_socketio_writes_it(value: Any) -> None:
    encoded = wire.encode(value)
    assert isinstance(encoded, str)
    assert json.loads(encoded) == json.loads(json.dumps(value, separators=(",", ":")))
    assert ", " not in encoded and ": " not in encoded  # compact


def test_bytes_raise_type_error_for_the_binary_packet() -> None:
    with pytest.raises(TypeError):
        wire.encode(["e", {"data": b"\x00\x01"}])


def test_reading_keeps_integers_exact_and_bounded() -> None:
    assert wire.decode('["e",{"n":123456789012345678901234567890}]') == [
        "e",
        {"n": 123456789012345678901234567890},
    ]
    with pytest.raises(ValueError):
        wire.decode("[" + "1" * 101 + "]")
