"""Socket.IO's JSON on the wire, written once by the fast paths and the HTTP API."""

from __future__ import annotations

import json
from typing import Any

import orjson


def compact_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON: by orjson, several times faster than ``json``, or by
    ``json`` for what orjson refuses (integers over 64 bits, keys that are not strings).
    Bytes raise ``TypeError``. orjson writes NaN as null (which JavaScript reads)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class JsonWire:
    """Socket.IO's JSON as python-socketio writes and reads it (compact; integers of at most
    100 digits, as engine.io's ``json.loads`` allows), without building a codec per call.
    Writing is ``compact_json``, whose bytes ``TypeError`` says a binary packet is due;
    reading stays with ``json``: orjson reads integers over 64 bits as floats."""

    def __init__(self) -> None:
        self.decode = json.JSONDecoder(parse_int=_bounded_int).decode

    @staticmethod
    def encode(value: Any) -> str:
        return compact_json(value).decode()


def _bounded_int(digits: str) -> int:
    if len(digits) > 100:
        raise ValueError("integer is too large")
    return int(digits)
