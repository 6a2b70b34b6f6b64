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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from server.transport.compact_json import JsonWire
from server.transport.engine import EngineOptions
from server.transport.packets import JsonCodec
from server.transport.sockets import SocketOptions, SocketServer
from server.transport.websocket import WebSocketProtocol

# A namespace the protocols' suites use; the transport serves "/" only, and refuses it.
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


def register_echo_handlers(server: SocketServer) -> None:
    """``message`` is emitted back as ``message-back`` with the same arguments (binary ones
    included); ``message-with-ack`` answers its ack with its arguments."""

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        return None

    async def message(sid: str, *args: Any) -> None:
        await server.emit("message-back", *args, to=sid)

    async def message_with_ack(sid: str, *args: Any) -> Any:
        return args

    handlers: dict[str, Handler] = {
        "connect": connect,
        "message": message,
        "message-with-ack": message_with_ack,
    }
    for event, handler in handlers.items():
        server.on(event, handler)


def build_echo_app(settings: EchoSettings) -> Any:
    """The ASGI app: the transport exactly as ``server.assembly`` and ``server.app`` build it,
    with echo handlers. Like Tandem, it serves the default namespace only."""
    sio = SocketServer(
        SocketOptions(
            max_payload_bytes=settings.max_payload_bytes,
            protocol_error_limit=settings.protocol_error_limit,
            connect_timeout_s=settings.connect_timeout_s,
        ),
        EngineOptions(
            ping_interval_s=settings.ping_interval_s,
            ping_timeout_s=settings.ping_timeout_s,
            max_payload_bytes=settings.engine_max_bytes,
            client_buffer_bytes=settings.client_buffer_bytes,
        ),
        JsonCodec(JsonWire()),
        count_error=lambda kind: None,
    )
    register_echo_handlers(sio)
    engine = sio.engine

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, engine.shutdown)
        elif scope["path"].startswith("/socket.io"):
            await engine(scope, receive, send)
        else:
            await _health(scope, receive, send)

    return app


async def _lifespan(receive: Receive, send: Send, shutdown: Callable[[], Awaitable[None]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


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
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.engine_max_bytes,
        ws_ping_interval=None,
        lifespan="on",
        log_level="warning",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
