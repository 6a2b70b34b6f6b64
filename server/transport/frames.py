"""Server-to-client websocket frames (RFC 6455 section 5.2), built once per publication.

A server's frames are not masked, so the bytes of one message are the same for every
recipient: the fan-out path frames a publication once and writes those bytes to each socket.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 1
_BINARY = 0x82  # FIN + opcode 2


def frame(payload: bytes, *, binary: bool = False) -> bytes:
    """One final, unfragmented, uncompressed frame carrying ``payload``."""
    head = _BINARY if binary else _TEXT
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


def engineio_frame(encoded: str | bytes) -> bytes:
    """The frame for an encoded Engine.IO packet: text for ``str``, binary for ``bytes``
    (Engine.IO v4 sends binary messages over websocket as raw binary frames)."""
    if isinstance(encoded, str):
        return frame(encoded.encode())
    return frame(encoded, binary=True)
