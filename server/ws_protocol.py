"""uvicorn's sans-I/O websocket protocol with a handle for writing prebuilt frames.

uvicorn takes a protocol class as its ``ws`` setting (a public seam). This one behaves as
uvicorn's ``websockets-sansio`` protocol, and also puts a ``RawSocket`` into the ASGI scope's
extensions: the fan-out path (``server.fastpath``) writes whole frames through it and hears
of flow control (pause/resume writing) and of the connection's loss. Once the handshake is
done the fast path may *detach* the socket from ASGI: incoming messages then go straight to
its ``Receiver`` instead of through a queue to a task awaiting ``receive()``, and the ASGI
call may return without the connection closing, so an idle connection holds no task and no
suspended call chain. Tested against uvicorn 0.54.0 and websockets 17.4 (pinned in
constraints.txt).
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from server.waitables import SlimEvent, SlimQueue

RAW_SOCKET = "tandem.raw_socket"


class FlowListener(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class Receiver(Protocol):
    def received(self, data: str | bytes) -> None: ...

    def lost(self) -> None: ...


class RawSocket:
    """What the fan-out path may do with a websocket: write frames, watch its flow, and
    take its incoming messages without ASGI (``detach``)."""

    __slots__ = ("_protocol", "listener", "receiver")

    def __init__(self, protocol: TandemWebSocketProtocol) -> None:
        self._protocol = protocol
        self.listener: FlowListener | None = None
        self.receiver: Receiver | None = None

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

    def detach(self, receiver: Receiver) -> None:
        """From now on every message goes to ``receiver``, and the ASGI call may end."""
        self._protocol.detach(receiver)

    def bound_send_buffer(self, size: int) -> int:
        """Cap the kernel's send buffer for this connection (Linux otherwise lets it grow to
        megabytes for a client that stops reading, out of the fan-out's sight); returns what
        it may now hold (Linux reserves twice the asked size), 0 when it cannot be set."""
        sock = self._protocol.transport.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            held: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        except OSError:
            return 0
        return held

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (as ASGI's ``websocket.close`` does)."""
        self._protocol.close_now(code)


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
        # uvicorn's run_asgi, except that a detached connection stays open when the call ends.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.raw.receiver is not None:
            # Nothing reads the scope again: no more ASGI calls for this connection.
            self.scope = None  # type: ignore[assignment]
            return
        if self.close_timer is None:
            self.transport.close()

    def detach(self, receiver: Receiver) -> None:
        self.raw.receiver = receiver
        # Messages that came in before, unread by the app, go first, in order.
        pending: list[str | bytes] = []
        while not self.queue.empty():
            message = self.queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                pending.append(text if text is not None else message.get("bytes") or b"")
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        for data in pending:
            receiver.received(data)

    def send_receive_event_to_app(self) -> None:
        receiver = self.raw.receiver
        if receiver is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close frame: as uvicorn, read on until the peer's close
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.logger.info("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            receiver.received(text)
        else:
            receiver.received(bytes(data))

    def close_now(self, code: int) -> None:
        # uvicorn's handling of ASGI's websocket.close, for a detached connection.
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, "")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def shutdown(self) -> None:
        # uvicorn answers a server shutdown with a close frame even when the client's close
        # got there first; websockets refuses to send a second one (InvalidState), and the
        # error ended `tandem serve` with status 1 after a clean drain.
        if self.handshake_complete and not self.close_sent and self.conn.state is not State.OPEN:
            self.stop_keepalive()
            self.transport.close()
            return
        super().shutdown()

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
        receiver, self.raw.receiver = self.raw.receiver, None
        if receiver is not None:
            receiver.lost()
