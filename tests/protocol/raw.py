"""A raw Engine.IO v4 / Socket.IO v5 client over WebSocket, for sending what real clients never
would. A reader thread answers pings and queues every other frame; every wait is bounded."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

Frame = str | bytes


@dataclass(frozen=True)
class Closed:
    """Put in the inbox when the server closes the connection."""

    code: int | None
    reason: str


class ConnectionWasClosed(AssertionError):
    pass


class RawClient:
    """One Engine.IO session. ``json`` (default) or ``msgpack`` Socket.IO packets."""

    def __init__(
        self,
        port: int,
        *,
        serializer: str = "json",
        compression: str | None = "deflate",
        origin: str | None = None,
        answer_pings: bool = True,
        sid: str | None = None,
    ) -> None:
        self.serializer = serializer
        self.answer_pings = answer_pings
        self.pings_answered = 0  # written by the reader thread only
        self.url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        if sid is not None:  # an upgrade of this long-polling session: see upgrade()
            self.url += f"&sid={sid}"
        self.ws: ClientConnection = connect(
            self.url,
            open_timeout=5,
            close_timeout=2,
            max_size=None,
            compression=compression,
            origin=None if origin is None else Origin(origin),
            legacy=True,  # a plain connection object, closed by close()
        )
        self.inbox: queue.Queue[Frame | Closed] = queue.Queue()
        self.closed: Closed | None = None
        self.unsolicited: list[Frame] = []
        self._ids = itertools.count(100)
        self._reader = threading.Thread(target=self._read, name="raw-socketio", daemon=True)
        self._reader.start()
        self.sid: str | None = None
        if sid is not None:
            self.handshake: dict[str, Any] = {"sid": sid}
            return
        try:
            opening = self.recv()
            assert isinstance(opening, str) and opening.startswith("0{"), opening
        except BaseException:
            self.close()
            raise
        self.handshake = json.loads(opening[1:])

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                frame = self.ws.recv()
                if frame == "2" and self.answer_pings:  # Engine.IO PING: answer like a client
                    self.ws.send("3")
                    self.pings_answered += 1
                    continue
                self.inbox.put(frame)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            self.inbox.put(Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else ""))
        except Exception as exc:  # pragma: no cover - surfaced by the next recv()
            self.inbox.put(Closed(None, f"reader failed: {exc!r}"))

    def send(self, frame: Frame) -> None:
        self.ws.send(frame)

    def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame (pings are answered, not returned)."""
        if self.closed is not None:
            raise ConnectionWasClosed(f"connection was closed: {self.closed}")
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no frame within {timeout}s") from None
        if isinstance(item, Closed):
            self.closed = item
            raise ConnectionWasClosed(f"connection was closed: {item}")
        return item

    def wait_closed(self, timeout: float = 3.0) -> tuple[Closed, list[Frame]]:
        """Read until the server closes; returns how, and the frames that came before."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"still open after {timeout}s; received {frames!r}")
            try:
                frames.append(self.recv(timeout=remaining))
            except ConnectionWasClosed:
                assert self.closed is not None
                return self.closed, frames

    def close(self) -> None:
        self.ws.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Socket.IO --------------------------------------------------------------------------

    def encode(self, packet_type: int, data: Any = None, ack_id: int | None = None) -> Frame:
        if self.serializer == "msgpack":
            fields: dict[str, Any] = {"type": packet_type, "nsp": "/"}
            if data is not None:
                fields["data"] = data
            if ack_id is not None:
                fields["id"] = ack_id
            encoded: bytes = msgpack.dumps(fields)
            return encoded
        body = "" if data is None else json.dumps(data)
        return f"4{packet_type}{'' if ack_id is None else ack_id}{body}"

    def decode(self, frame: Frame) -> tuple[int, int | None, Any]:
        """``(socket.io type, ack id, data)`` of a Socket.IO packet."""
        if isinstance(frame, bytes):
            fields = msgpack.loads(frame)
            return fields["type"], fields.get("id"), fields.get("data")
        assert frame.startswith("4"), frame
        packet_type, rest = int(frame[1]), frame[2:]
        digits = len(rest) - len(rest.lstrip("0123456789"))
        ack_id = int(rest[:digits]) if digits else None
        body = rest[digits:]
        return packet_type, ack_id, json.loads(body) if body else None

    def connect_namespace(self, token: str | None) -> Any:
        """CONNECT with ``{"token": ...}``; returns the CONNECT (or CONNECT_ERROR) data."""
        self.send(self.encode(0, {"token": token} if token is not None else None))
        packet_type, _, data = self.decode(self.recv())
        assert packet_type in (0, 4), (packet_type, data)
        if packet_type == 0:
            self.sid = data["sid"]
        return data

    def next_ack_id(self) -> int:
        return next(self._ids)

    def wait_ack(self, ack_id: int, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if self._is_message(frame):
                packet_type, got, data = self.decode(frame)
                if packet_type == 3 and got == ack_id:
                    return data[0] if isinstance(data, list) and len(data) == 1 else data
            self.unsolicited.append(frame)

    def request(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        """Emit ``event`` with an ack id; returns the ack's argument."""
        ack_id = self.next_ack_id()
        self.send(self.encode(2, [event, *args], ack_id))
        return self.wait_ack(ack_id, timeout)

    def probe(self, timeout: float = 5.0) -> None:
        """The connection still works: a subscribe is answered ``ok`` (after any rate limit)."""
        for _ in range(50):
            ack = self.request("subscribe", {"channel": "room:probe"}, timeout=timeout)
            if not (isinstance(ack, dict) and ack.get("error", {}).get("code") == "rate_limited"):
                break
            time.sleep(0.1)
        assert isinstance(ack, dict) and ack.get("ok") is True, ack

    def next_event(self, timeout: float = 5.0) -> tuple[str, Any]:
        """The next server EVENT (``[name, arg]``), skipping everything else."""
        for frame in self.unsolicited:
            if self._is_message(frame) and self.decode(frame)[0] == 2:
                self.unsolicited.remove(frame)
                name, arg = self.decode(frame)[2]
                return name, arg
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if self._is_message(frame):
                packet_type, _, data = self.decode(frame)
                if packet_type == 2:
                    return data[0], data[1] if len(data) > 1 else None
            self.unsolicited.append(frame)

    @staticmethod
    def _is_message(frame: Frame) -> bool:
        return isinstance(frame, bytes) or frame.startswith("4")
