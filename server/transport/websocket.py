"""Tandem's websocket connections: an asyncio protocol uvicorn hands upgrades to.

uvicorn takes the protocol class for websocket upgrades as its ``ws`` setting and hands it
the upgraded connection (``connection_made``, then the request's bytes). This protocol
speaks RFC 6455 through ``websockets``' sans-I/O ``ServerProtocol`` and runs the ASGI app for
the handshake, so middleware, routing and the client's address (proxy headers) apply as they
do to HTTP. The app finds a ``Socket`` in the scope's extensions (``SOCKET``): Engine.IO
accepts the connection, then *detaches* it from ASGI (``Socket.detach``). From then on its
messages go straight to a ``Receiver`` and whole prebuilt frames are written through
``Socket.write``, and the ASGI call returns: an established connection holds no task and no
suspended call chain, and a publication is framed once for all its recipients. An app that
does not detach gets ASGI's usual receive and send until its call returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.transport.slim import SlimEvent, SlimQueue

SOCKET = "tandem.socket"
_CLOSE_TIMEOUT_S = 10.0
log = logging.getLogger("uvicorn.error")


class FlowListener(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class Receiver(Protocol):
    def received(self, data: str | bytes) -> None: ...

    def lost(self) -> None: ...


class Socket:
    """What the transport may do with an accepted websocket: write frames, watch its flow,
    and take its messages without ASGI (``detach``)."""

    __slots__ = ("_protocol", "listener", "receiver")

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self._protocol = protocol
        self.listener: FlowListener | None = None
        self.receiver: Receiver | None = None

    @property
    def open(self) -> bool:
        p = self._protocol
        return p.accepted and not (p.close_sent or p.lost)

    @property
    def paused(self) -> bool:
        return not self._protocol.writable.is_set()

    def write(self, data: bytes) -> None:
        p = self._protocol
        if p.accepted and not (p.close_sent or p.lost):  # never a data frame after our close
            p.transport.write(data)

    def get_write_buffer_size(self) -> int:
        size: int = self._protocol.transport.get_write_buffer_size()
        return size

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

    def detach(self, receiver: Receiver) -> None:
        """From now on every message goes to ``receiver``, and the ASGI call may end."""
        self._protocol.detach(receiver)

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; what was written before goes out first."""
        self._protocol.close(code)


class WebSocketProtocol(asyncio.Protocol):
    """One websocket connection (see the module). Constructed by uvicorn's HTTP protocol."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        if not config.loaded:
            config.load()
        self._app = config.loaded_app
        self._root_path: str = config.root_path
        self._app_state = app_state
        self._default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        # uvicorn's shutdown calls ``shutdown`` on each of these, and waits for the tasks.
        self._connections: set[Any] = server_state.connections
        self._tasks: set[asyncio.Task[None]] = server_state.tasks
        self.conn = ServerProtocol(max_size=config.ws_max_size, logger=log)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.socket = Socket(self)
        self.writable = SlimEvent()
        self.writable.set()
        self.accepted = False
        self.close_sent = False
        self.lost = False
        self._request: Request | None = None
        self._scope: dict[str, Any] | None = None
        self._inbox: SlimQueue[dict[str, Any]] | None = None  # ASGI receive, until detached
        self._denial: tuple[int, list[tuple[bytes, bytes]], list[bytes]] | None = None
        self._fragments: list[bytes] = []
        self._text = False
        self._read_paused = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
        if self.conn.parser_exc is not None:
            self._flush_protocol()
            self._closed_by_protocol()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self.writable.clear()
        if self.socket.listener is not None:
            self.socket.listener.pause()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.socket.listener is not None:
            self.socket.listener.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._connections.discard(self)
        self.writable.set()  # a send waiting for the buffer to drain would wait for ever
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._inbox is not None:
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})
        if self.socket.listener is not None:
            self.socket.listener.close()
            self.socket.listener = None
        receiver, self.socket.receiver = self.socket.receiver, None
        if receiver is not None:
            receiver.lost()

    def shutdown(self) -> None:
        """uvicorn is stopping: say so (1012, service restart) and close."""
        if self.accepted and not self.close_sent and self.conn.state is State.OPEN:
            self.conn.send_close(1012)
            self._flush_protocol()
        elif not self.accepted and self._request is not None:
            self._respond(self.conn.reject(HTTPStatus.SERVICE_UNAVAILABLE, ""))
        self.transport.close()

    # -- the handshake -----------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        self._request = request
        response = self.conn.accept(request)
        if response.status_code != 101:  # not a valid websocket handshake
            self._respond(response)
            return
        self._pending_response = response
        client = self.transport.get_extra_info("peername")
        server = self.transport.get_extra_info("sockname")
        raw_path, _, query = request.path.partition("?")
        self._scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if self.transport.get_extra_info("sslcontext") else "ws",
            "server": tuple(server[:2]) if server else None,
            "client": tuple(client[:2]) if client else None,
            "root_path": self._root_path,
            "path": self._root_path + unquote(raw_path),
            "raw_path": raw_path.encode("ascii"),
            "query_string": query.encode("ascii", "replace"),
            "headers": [
                (key.lower().encode("latin-1"), value.encode("latin-1", "replace"))
                for key, value in request.headers.raw_items()
            ],
            "subprotocols": [
                token.strip()
                for header in request.headers.get_all("Sec-WebSocket-Protocol")
                for token in header.split(",")
            ],
            "state": self._app_state.copy(),
            "extensions": {"websocket.http.response": {}, SOCKET: self.socket},
        }
        self._inbox = SlimQueue()
        self._inbox.put_nowait({"type": "websocket.connect"})
        task = asyncio.get_running_loop().create_task(self._run_asgi())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_asgi(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        except Exception:
            log.exception("Exception in ASGI application")
            if not self.accepted:
                self._respond(self.conn.reject(HTTPStatus.INTERNAL_SERVER_ERROR, ""))
        if not self.accepted and not self.close_sent and not self.lost:
            log.error("ASGI callable returned without completing the websocket handshake")
            self._respond(self.conn.reject(HTTPStatus.INTERNAL_SERVER_ERROR, ""))
        self._scope = None  # nothing reads it again
        if self.socket.receiver is None and not self.close_sent:
            self.close(1000)

    async def _receive(self) -> dict[str, Any]:
        inbox = self._inbox
        if inbox is None:  # detached: ASGI no longer sees this connection's messages
            return {"type": "websocket.disconnect", "code": 1000}
        return await inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.lost:
            return
        if self._denial is not None:
            if kind == "websocket.http.response.body":
                self._denial[2].append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._deny(*self._denial)
            return
        if not self.accepted:
            if kind == "websocket.accept":
                await self._accept(message)
            elif kind == "websocket.close":
                self._respond(self.conn.reject(HTTPStatus.FORBIDDEN, ""))
            elif kind == "websocket.http.response.start":
                self._denial = (message["status"], list(message.get("headers", [])), [])
            return
        if kind == "websocket.send":
            await self.writable.wait()
            data = message.get("bytes")
            if data is not None:
                self.conn.send_binary(data)
            else:
                self.conn.send_text(message.get("text", "").encode())
            self._flush_protocol()
        elif kind == "websocket.close":
            self.close(message.get("code", 1000), message.get("reason") or "")

    async def _accept(self, message: dict[str, Any]) -> None:
        response: Response = self._pending_response
        del response.headers["Date"]
        for name, value in self._default_headers + list(message.get("headers", [])):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]
        if self.transport.is_closing():
            return
        self.conn.send_response(response)
        self._flush_protocol()
        self.accepted = True
        self._request = None  # ~2 KiB a connection that nothing reads again
        del self._pending_response

    def _deny(self, status: int, headers: list[tuple[bytes, bytes]], body: list[bytes]) -> None:
        """The app's own answer instead of the handshake (ASGI's denial response)."""
        fields = Headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
        )
        content = b"".join(body)
        if "Content-Length" not in fields:  # (Headers adds a value; it never replaces one)
            fields["Content-Length"] = str(len(content))
        self._respond(Response(status, _phrase(status), fields, content))

    def _respond(self, response: Response) -> None:
        """Answer the handshake with a plain HTTP response and close."""
        self.close_sent = True
        self.conn.send_response(response)
        self._flush_protocol()
        self.transport.close()

    # -- messages ----------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._text = opcode is Opcode.TEXT
            self._fragments = [frame.data]  # type: ignore[list-item]
        elif opcode is Opcode.CONT:
            self._fragments.append(frame.data)  # type: ignore[arg-type]
        elif opcode is Opcode.PING:
            self._flush_protocol()  # the sans-I/O protocol queued the pong
            return
        elif opcode is Opcode.CLOSE:
            self._flush_protocol()  # its answer to the peer's close, if it was first
            if self.close_sent:
                self.transport.close()  # the closing handshake is complete
            else:
                self.close_sent = True
                self.transport.close()
            return
        else:
            return
        if not frame.fin:
            return
        data = self._fragments[0] if len(self._fragments) == 1 else b"".join(self._fragments)
        self._fragments = []
        if self.close_sent:
            return  # past our close frame: read on until the peer's close only
        message: str | bytes
        if self._text:
            try:
                message = bytes(data).decode()
            except UnicodeDecodeError:
                self.close(1007)
                return
        else:
            message = bytes(data)
        receiver = self.socket.receiver
        if receiver is not None:
            receiver.received(message)
            return
        if self._inbox is not None:
            key = "text" if isinstance(message, str) else "bytes"
            self._inbox.put_nowait({"type": "websocket.receive", key: message})

    def detach(self, receiver: Receiver) -> None:
        self.socket.receiver = receiver
        inbox, self._inbox = self._inbox, None
        # Messages that came in before, unread by the app, go first, in order.
        while inbox is not None and not inbox.empty():
            message = inbox.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                receiver.received(text if text is not None else message.get("bytes") or b"")

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_sent or self.lost or self.transport.is_closing():
            return
        if self.conn.state is State.OPEN:
            self.conn.send_close(code, reason)
            self._flush_protocol()
        self.close_sent = True
        self._close_timer = asyncio.get_running_loop().call_later(
            _CLOSE_TIMEOUT_S, self.transport.close
        )

    def _closed_by_protocol(self) -> None:
        """The peer broke RFC 6455 (or sent more than the size limit): the sans-I/O protocol
        has queued its close frame; the connection ends."""
        self.close_sent = True
        self.transport.close()

    def _flush_protocol(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(b"".join(data))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
