"""What the document events carry: Yjs updates and state vectors as bytes."""

from __future__ import annotations

EMPTY_UPDATE = b"\x00\x00"  # a Yjs update that carries nothing


def binary(value: object) -> bytes:
    """Binary fields arrive as bytes (attachments, msgpack); accept the other buffer types."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes, got {type(value).__name__}")
