"""uvicorn's sans-I/O websocket protocol with a handle for writing prebuilt frames.

uvicorn takes a protocol class as its ``ws`` setting (a public seam). This one behaves as
uvicorn's ``websockets-sansio`` protocol, and also puts a ``RawSocket`` into the ASGI scope's
extensions: the fan-out path (``server.fastpath``) writes whole frames through it and hears
of flow control (pause/resume writing) and of the connection's loss. Tested against uvicorn
0.54.0 and websockets 17.4 (pinned in constraints.txt).
"""

from __future__ import annotations

from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.waitables import SlimEvent, SlimQueue

RAW_SOCKET = "tandem.raw_socket"


class FlowListener(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class RawSocket:
    """What the fan-out path may do with a websocket: write frames, watch its flow."""

    __slots__ = ("_protocol", "listener")

    def __init__(self, protocol: TandemWebSocketProtocol) -> None:
        self._protocol = protocol
        self.listener: FlowListener | None = None

    @property
    def open(self) -> bool:
        p = self._protocol
        return p.handshake_complete and not (p.close_sent or p.disconnected)

    @property
    def paused(self) -> bool:
        return not self._protocol.writable.is_set()

    def write(self, data: bytes) -> None:
        p = self._protocol
        # Called after the handshake only; never a data frame after our close frame.
        if not (p.close_sent or p.disconnected):
            p.transport.write(data)

    def get_write_buffer_size(self) -> int:
        size: int = self._protocol.transport.get_write_buffer_size()
        return size


class TandemWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw = RawSocket(self)
        # Same calls, a fraction of asyncio's memory (server.waitables).
        self.queue = SlimQueue()  # type: ignore[assignment]
        self.writable = SlimEvent()  # type: ignore[assignment]
        self.writable.set()

    async def run_asgi(self) -> None:
        extensions: dict[str, Any] = self.scope["extensions"]
        extensions[RAW_SOCKET] = self.raw
        await super().run_asgi()

    def start_keepalive(self) -> None:
        # uvicorn calls this once the handshake response is written; nothing reads the
        # handshake's Request and Response after that, and they weigh ~3.5 KiB a connection.
        self.request = self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.raw.listener is not None:
            self.raw.listener.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.raw.listener is not None:
            self.raw.listener.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.raw.listener is not None:
            self.raw.listener.close()
            self.raw.listener = None
