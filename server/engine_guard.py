"""Validates Engine.IO framing before python-engineio parses it.

python-engineio 4.15 raises outside its own error handling on some malformed frames: an empty
or non-numeric WebSocket frame drops the connection without a close frame (and leaves the
session registered until the ping timeout), an unknown packet type logs a traceback, and a
malformed polling POST is answered 200 with a traceback. Here such input is counted as a
protocol error of the session instead, and the usual three strikes apply.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A Socket.IO payload no client can produce meaningfully (it starts with a NUL): the frame
# handed to engineio in place of a malformed one, so the Socket.IO layer counts it.
MALFORMED = "4\x00malformed engine.io frame"
_TYPES = frozenset("0123456")

BadPost = Callable[[str], Awaitable[None]]


def valid_frame(text: str) -> bool:
    return bool(text) and text[0] in _TYPES


def valid_payload(body: bytes) -> bool:
    """A polling payload: packets separated by 0x1e, each text or ``b`` + base64."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for packet in text.split("\x1e"):
        if packet.startswith("b"):
            try:
                binascii.a2b_base64(packet[1:].encode("ascii"), strict_mode=True)
            except (binascii.Error, UnicodeEncodeError):
                return False
        elif not valid_frame(packet):
            return False
    return True


class EngineGuard:
    def __init__(self, app: ASGIApp, *, path: str, on_bad_post: BadPost) -> None:
        self._app = app
        self._path = path
        self._on_bad_post = on_bad_post

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith(self._path):
            await self._app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._app(scope, _checked_frames(receive), send)
            return
        # The Engine.IO spec answers these 400 (python-engineio opens a long-polling session
        # for a GET that names no transport, and answers other methods 405).
        method = scope["method"]
        if method not in ("GET", "POST", "OPTIONS"):
            await _refuse(send, 2, "Bad handshake method")
        elif method != "OPTIONS" and _transport(scope) not in ("polling", "websocket"):
            await _refuse(send, 0, "Transport unknown")
        elif method == "POST":
            await self._post(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()  # the whole body: BodySizeLimit runs first
        if message["type"] == "http.request" and not valid_payload(message.get("body", b"")):
            sid = parse_qs(scope.get("query_string", b"").decode()).get("sid", [""])[0]
            await self._on_bad_post(sid)
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"malformed engine.io payload"})
            return
        first = True

        async def again() -> Message:
            nonlocal first
            if first:
                first = False
                return message
            return await receive()

        await self._app(scope, again, send)


def _transport(scope: Scope) -> str:
    query: dict[str, list[str]] = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("transport", [""])[0]


async def _refuse(send: Send, code: int, message: str) -> None:
    """Engine.IO's error answer: 400 with ``{"code", "message"}``."""
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _checked_frames(receive: Receive) -> Receive:
    async def checked() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None and not valid_frame(text):
                return {"type": "websocket.receive", "text": MALFORMED}
        return message

    return checked
