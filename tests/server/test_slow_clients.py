"""A client that stops reading: latest-value events coalesce, anything else is bounded and the
client is cut off with ``server.notice slow``; other subscribers are not held back.

The lagging client is a raw websocket whose socket has a tiny receive buffer and that stops
reading, so the server's transport really pauses."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.sio import connected

PAD = "x" * 30_000  # enough to fill the kernel's socket buffers quickly


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The default bound (1 MiB): a latest-value frame that precedes another event of its
    # channel is kept, so the lagging client's backlog holds one tick per mark.
    env = {"TANDEM_LATEST_VALUE_EVENTS": "demo.tick"}
    with live_server(tmp_path_factory.mktemp("node"), env) as node:
        yield node


class RawClient:
    """Socket.IO over a bare websocket, read only when the test says so."""

    def __init__(self, server: LiveServer, token: str) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.sock = sock
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert self.text().startswith("0{")  # Engine.IO OPEN
        self.send("40" + json.dumps({"token": token}))
        assert self.text().startswith("40{")  # Socket.IO CONNECT

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(size)

    def text(self) -> str:
        """The next Engine.IO message, answering pings on the way."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x8:
                raise EOFError("close frame")
            if opcode == 0x1:
                text = payload.decode()
                if text == "2":
                    self.send("3")
                    continue
                return text

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = len(payload)
        head = struct.pack("!BB", 0x81, 0x80 | size) if size < 126 else None
        if head is None:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        self.sock.sendall(head + mask + masked)

    def subscribe(self, channel: str) -> None:
        self.send("420" + json.dumps(["subscribe", {"channel": channel}]))
        ack = self.text()
        assert ack.startswith("430") and json.loads(ack[3:])[0]["ok"], ack

    def events(self) -> Iterator[tuple[str, Any]]:
        """Socket.IO events until the connection ends."""
        while True:
            try:
                text = self.text()
            except (EOFError, OSError):
                return
            if text.startswith("42"):
                event, data = json.loads(text[2:])
                yield event, data

    def close(self) -> None:
        self.sock.close()


def publish_all(server: LiveServer, channel: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    ) as http:
        for event, data in events:
            body = {"channel": channel, "event": event, "data": data}
            response = http.post("/api/publish", json=body)
            assert response.status_code == 200, response.text


def test_a_lagging_client_gets_the_latest_values_and_every_other_event(
    server: LiveServer,
) -> None:
    channel = f"room:lag-{uuid.uuid4().hex[:8]}"
    client = RawClient(server, server.token("lag", channels=["room:*"]))
    try:
        client.subscribe(channel)
        count = 400
        events = [
            ("demo.mark", {"i": i}) if i % 50 == 0 else ("demo.tick", {"i": i, "pad": PAD})
            for i in range(count)
        ]
        publish_all(server, channel, events)  # meanwhile the client reads nothing
        got: list[tuple[str, Any]] = []
        for event, envelope in client.events():
            got.append((event, envelope))
            assert event != "server.notice", envelope
            if envelope["data"]["i"] == count - 1:
                break
    finally:
        client.close()
    ticks = [env["data"]["i"] for event, env in got if event == "demo.tick"]
    marks = [env["data"]["i"] for event, env in got if event == "demo.mark"]
    assert marks == list(range(0, count, 50)), "a non-latest event was dropped"
    assert ticks == sorted(ticks) and ticks[-1] == count - 1
    assert len(ticks) < count - len(marks), "nothing was coalesced: the client never lagged"
    offsets = [env["offset"] for _, env in got]
    assert offsets == sorted(set(offsets))
    for (_, before), (event, after) in zip(got, got[1:], strict=False):
        if after["offset"] != before["offset"] + 1:
            assert after.get("latest") is True, f"gap before a {event}"


async def test_a_client_past_its_bound_is_told_it_is_slow_and_others_get_everything(
    server: LiveServer,
) -> None:
    channel = f"room:slow-{uuid.uuid4().hex[:8]}"
    token = server.token("slow", channels=["room:*"])
    count = 300
    healthy: list[int] = []
    done = asyncio.Event()
    reader = socketio.AsyncClient(reconnection=False)

    @reader.on("demo.bulk")
    async def on_bulk(envelope: dict[str, Any]) -> None:
        healthy.append(envelope["data"]["i"])
        if len(healthy) == count:
            done.set()

    await reader.connect(server.url, auth={"token": token}, transports=["websocket"])
    client = await asyncio.to_thread(RawClient, server, token)
    try:
        assert (await reader.call("subscribe", {"channel": channel}))["ok"]
        await asyncio.to_thread(client.subscribe, channel)
        bulk = [("demo.bulk", {"i": i, "pad": PAD}) for i in range(count)]
        await asyncio.to_thread(publish_all, server, channel, bulk)
        async with asyncio.timeout(20):
            await done.wait()
        got = await asyncio.to_thread(lambda: list(client.events()))
    finally:
        client.close()
        await reader.disconnect()
        await reader.shutdown()
    assert healthy == list(range(count))
    assert got, "the slow client got nothing at all"
    event, notice = got[-1]
    assert event == "server.notice", event
    assert notice["code"] == "slow" and notice["reconnect"] is True
    received = [env["data"]["i"] for _, env in got[:-1]]
    assert received == list(range(len(received))) and len(received) < count


def slow_disconnects(server: LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(r'^tandem_disconnects_total\{reason="slow"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_client_cut_off_as_slow_resumes_from_its_position(server: LiveServer) -> None:
    """Small publications to a client that stopped reading: the node cuts it off before it
    drops more of a channel's publications than the history holds, and everything it had
    been sent still reaches it; so resubscribing from its position recovers the rest (issue
    16: cut off 4.9 MB behind, past the 300-publication history, recovered: false)."""
    channel = f"room:resume-{uuid.uuid4().hex[:8]}"
    token = server.token("slow", channels=["room:*"])
    client = await asyncio.to_thread(RawClient, server, token)
    before = await asyncio.to_thread(slow_disconnects, server)
    published = 0
    try:
        await asyncio.to_thread(client.subscribe, channel)
        async with asyncio.timeout(60):
            # Publish in small steps until the node says it cut the client off.
            while await asyncio.to_thread(slow_disconnects, server) == before:
                step = [("demo.small", {"i": published + i, "pad": "y" * 150}) for i in range(10)]
                await asyncio.to_thread(publish_all, server, channel, step)
                published += len(step)
        got = await asyncio.to_thread(lambda: list(client.events()))
    finally:
        client.close()
    event, notice = got[-1]
    assert event == "server.notice" and notice["code"] == "slow", got[-1]
    received = [env for name, env in got if name == "demo.small"]
    assert received and len(received) < published
    last = received[-1]
    async with connected(server.url, token) as again:
        since = {"epoch": last["epoch"], "offset": last["offset"]}
        ack = await again.call("subscribe", {"channel": channel, "since": since})
    assert ack["ok"] and ack["recovered"], {k: ack.get(k) for k in ("recovered", "offset")}
    seen = [env["data"]["i"] for env in received] + [p["data"]["i"] for p in ack["publications"]]
    assert seen == list(range(published)), "publications were lost on the way back"
