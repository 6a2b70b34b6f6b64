"""The echo app: Tandem's Socket.IO transport with echo handlers instead of Tandem's gateway.

The conformance suite runs every transport-level test against this app as well as against
``tandem serve``: what the test suites of the protocols need (an event echoed back, an ack
that returns its arguments, binary attachments echoed, a second namespace) Tandem itself has
no handlers for. ``build_echo_app`` is the only place that knows which classes make up the
transport, so a new transport is tried here by changing that one function. Run as
``python -m tests.protocol.conformance.echo_app --port N``: uvicorn with the websocket
protocol class ``tandem serve`` uses.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
import uvicorn
from starlette.types import Receive, Scope, Send

from server.engine_guard import EngineGuard
from server.fastpath import FastPath
from server.socket_server import TandemSocketServer
from server.ws_protocol import TandemWebSocketProtocol

# A namespace of the echo app besides "/", for the namespace tests.
CUSTOM_NAMESPACE = "/custom"


@dataclass(frozen=True)
class EchoSettings:
    ping_interval_s: float
    ping_timeout_s: float
    connect_timeout_s: float
    max_payload_bytes: int = 64 * 1024
    engine_max_bytes: int = 1_000_000
    client_buffer_bytes: int = 1024 * 1024
    # As the conformance profile of ``tandem serve``: a malformed packet ends its session.
    protocol_error_limit: int = 1


Handler = Callable[..., Awaitable[Any]]


def register_echo_handlers(server: Any, namespace: str = "/") -> None:
    """``message`` is emitted back as ``message-back`` with the same arguments (binary ones
    included); ``message-with-ack`` answers its ack with its arguments."""

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        return None

    async def message(sid: str, *args: Any) -> None:
        await server.emit("message-back", args, to=sid, namespace=namespace)

    async def message_with_ack(sid: str, *args: Any) -> Any:
        return args

    handlers: dict[str, Handler] = {
        "connect": connect,
        "message": message,
        "message-with-ack": message_with_ack,
    }
    for event, handler in handlers.items():
        server.on(event, handler, namespace=namespace)


def build_echo_app(settings: EchoSettings) -> Any:
    """The ASGI app: the transport exactly as ``server.runtime`` and ``server.app`` build it
    (socket server, fan-out fast path, Engine.IO guard), with echo handlers."""
    sio = TandemSocketServer(
        async_mode="asgi",
        max_payload_bytes=settings.max_payload_bytes,
        protocol_error_limit=settings.protocol_error_limit,
        count_error=lambda kind: None,
        max_http_buffer_size=settings.engine_max_bytes,
        ping_interval=settings.ping_interval_s,
        ping_timeout=settings.ping_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )
    fast = FastPath(limit_bytes=settings.client_buffer_bytes)
    sio.eio.fast = fast
    fast.on_text = sio.fast_event
    for namespace in ("/", CUSTOM_NAMESPACE):
        register_echo_handlers(sio, namespace)

    async def shutdown() -> None:
        await fast.__aexit__(None, None, None)
        await sio.shutdown()

    combined = socketio.ASGIApp(sio, other_asgi_app=_health, on_shutdown=shutdown)
    return EngineGuard(combined, path="/socket.io", on_bad_post=sio.bad_post)


async def _health(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /health/ready``, as a Tandem node has it: the app is serving."""
    if scope["type"] != "http":
        return
    status = 200 if scope["path"] == "/health/ready" else 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok" if status == 200 else b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, required=True)
    parser.add_argument("--ping-timeout", type=float, required=True)
    parser.add_argument("--connect-timeout", type=float, required=True)
    args = parser.parse_args()
    settings = EchoSettings(args.ping_interval, args.ping_timeout, args.connect_timeout)
    # The same uvicorn settings as ``tandem serve`` where they touch the transport.
    config = uvicorn.Config(
        build_echo_app(settings),
        host="127.0.0.1",
        port=args.port,
        ws=TandemWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.engine_max_bytes,
        ws_ping_interval=None,
        lifespan="on",
        log_level="warning",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
