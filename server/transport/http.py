"""Engine.IO over HTTP: the spec's error answers, long-polling payloads, CORS preflights, and
what is kept of a handshake's request."""

from __future__ import annotations

import binascii
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from server.transport.session import PACKET_TYPES

# The spec's error codes, each answered with HTTP 400 and ``{"code", "message"}``.
UNKNOWN_TRANSPORT = (0, "Transport unknown")
UNKNOWN_SID = (1, "Session ID unknown")
BAD_METHOD = (2, "Bad handshake method")
BAD_REQUEST = (3, "Bad request")
FORBIDDEN = (4, "Forbidden")
UNSUPPORTED_VERSION = (5, "Unsupported protocol version")
# Not the spec's: a node that is shutting down opens no new session (503, Retry-After), so a
# reconnecting client goes elsewhere, or comes back once the node has restarted.
DRAINING = (-1, "Server is restarting")
_RETRY = [(b"retry-after", b"1")]
TEXT = [(b"content-type", b"text/plain; charset=UTF-8")]
Headers = list[tuple[bytes, bytes]]


def environ(scope: Scope) -> dict[str, Any]:
    """What is kept of the handshake: the client's address (after proxy headers), its query
    and the few headers the application reads."""
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REMOTE_ADDR": client[0] if client else "",
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
    }
    for name, value in scope.get("headers", []):
        key = _KEPT_HEADERS.get(name)
        if key is not None:
            environ[key] = value.decode("latin-1")
    return environ


_KEPT_HEADERS = {
    b"origin": "HTTP_ORIGIN",
    b"user-agent": "HTTP_USER_AGENT",
    b"x-forwarded-for": "HTTP_X_FORWARDED_FOR",
    b"x-request-id": "HTTP_X_REQUEST_ID",
}


def parse_payload(body: bytes) -> list[str | bytes] | None:
    """The packets of a long-polling POST, or None if it is not a valid payload."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    packets: list[str | bytes] = []
    for packet in text.split("\x1e"):
        if packet.startswith("b"):
            try:
                packets.append(binascii.a2b_base64(packet[1:].encode("ascii"), strict_mode=True))
            except (binascii.Error, UnicodeEncodeError):
                return None
        elif not packet or packet[0] not in PACKET_TYPES:
            return None
        else:
            packets.append(packet)
    return packets


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def preflight(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    answer = [(b"access-control-allow-methods", b"OPTIONS, GET, POST")]
    asked = headers.get(b"access-control-request-headers")
    if asked:
        answer.append((b"access-control-allow-headers", asked))
    return answer


async def answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def refuse(send: Send, error: tuple[int, str], cors: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"code": error[0], "message": error[1]}).encode()
    status, more = (503, _RETRY) if error is DRAINING else (400, [])
    await answer(send, status, body, [(b"content-type", b"application/json"), *more, *cors])


async def refuse_websocket(send: Send, error: tuple[int, str]) -> None:
    """A refused websocket handshake: the same answer as for long-polling."""
    body = json.dumps({"code": error[0], "message": error[1]}).encode()
    status, more = (503, _RETRY) if error is DRAINING else (400, [])
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *more,
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})
