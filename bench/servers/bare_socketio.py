"""A bare python-socketio server with Tandem's event contract, for comparison in bench/.

One process, in memory, under uvicorn, no auth and no validation beyond the shape:
``subscribe`` {channel} enters the room; ``publish`` {channel, event, data} emits the envelope
{channel, type, offset, epoch, ts, data} to the room; ``POST /api/publish`` does the same over
HTTP. Usage: python -m bench.servers.bare_socketio --port PORT [--ws auto] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from typing import Any

import socketio
import uvicorn

EPOCH = "bare"


class Rooms:
    """Offsets per channel and the emit to the room."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio
        self.offsets: dict[str, int] = {}

    async def publish(self, channel: str, event: str, data: Any) -> int:
        offset = self.offsets.get(channel, 0) + 1
        self.offsets[channel] = offset
        envelope = {
            "channel": channel,
            "type": event,
            "offset": offset,
            "epoch": EPOCH,
            "ts": time.time(),
            "data": data,
        }
        await self._sio.emit(event, envelope, room=channel)
        return offset


def _valid(req: Any) -> bool:
    return (
        isinstance(req, dict)
        and isinstance(req.get("channel"), str)
        and isinstance(req.get("event"), str)
    )


def _refusal(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "invalid_payload", "message": message}}


def create_app() -> socketio.ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
    rooms = Rooms(sio)

    async def subscribe(sid: str, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict) or not isinstance(req.get("channel"), str):
            return _refusal("channel")
        channel = req["channel"]
        await sio.enter_room(sid, channel)
        return {
            "ok": True,
            "channel": channel,
            "epoch": EPOCH,
            "offset": rooms.offsets.get(channel, 0),
            "recovered": False,
            "publications": [],
            "state": None,
        }

    async def publish(sid: str, req: Any) -> dict[str, Any]:
        if not _valid(req):
            return _refusal("channel, event")
        offset = await rooms.publish(req["channel"], req["event"], req.get("data"))
        return {"ok": True, "offset": offset, "epoch": EPOCH, "duplicate": False}

    sio.on("subscribe", subscribe)
    sio.on("publish", publish)
    return socketio.ASGIApp(sio, other_asgi_app=_http_app(rooms))


def _http_app(rooms: Rooms) -> Any:
    """GET /health, POST /api/publish and /api/publish/batch, as a raw ASGI app."""

    async def respond(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/health":
            await respond(send, 200, b'{"ok":true}')
            return
        batch = scope["path"] == "/api/publish/batch"
        if scope["method"] != "POST" or scope["path"] not in ("/api/publish", "/api/publish/batch"):
            await respond(send, 404, b"{}")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            req = json.loads(body)
        except ValueError:
            req = None
        items = req.get("publications") if batch and isinstance(req, dict) else [req]
        if not isinstance(items, list) or not all(_valid(item) for item in items):
            await respond(send, 422, b"{}")
            return
        results = [
            {
                "offset": await rooms.publish(item["channel"], item["event"], item.get("data")),
                "epoch": EPOCH,
                "duplicate": False,
            }
            for item in items
        ]
        reply = {"results": results} if batch else results[0]
        await respond(send, 200, json.dumps(reply).encode())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="auto", help="uvicorn websocket implementation")
    parser.add_argument("--max-seconds", type=float, default=3600, help="stop after this long")
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(), host=args.host, port=args.port, ws=args.ws, log_level="warning"
    )
    # Never outlive the benchmark, even if it dies without stopping us.
    timer = threading.Timer(args.max_seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    # Server.run picks the event loop as Tandem's `serve` does (uvloop when installed).
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
