"""Raw Engine.IO v4 / Socket.IO v5 over both transports, as the protocols' test suites speak
it: long-polling through httpx, WebSocket through ``tests.protocol.raw.RawClient``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.protocol.conformance.targets import Target
from tests.protocol.raw import RawClient

SEP = "\x1e"  # Engine.IO v4's record separator between the packets of a polling payload
POLLING = {"EIO": "4", "transport": "polling"}
HANDSHAKE_KEYS = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]
PLACEHOLDER_0 = '{"_placeholder":true,"num":0}'
PLACEHOLDER_1 = '{"_placeholder":true,"num":1}'


class Polling:
    """One long-polling session; ``packets`` answers the server's pings like a client."""

    def __init__(self, target: Target, *, timeout: float = 5.0) -> None:
        self.target = target
        self.http = httpx.Client(base_url=target.url, timeout=timeout)
        self.sid = ""

    def __enter__(self) -> Polling:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def open(self) -> dict[str, Any]:
        """The handshake: GET without a sid; returns the OPEN packet's data."""
        opened = self.http.get("/socket.io/", params=POLLING)
        assert opened.status_code == 200, (opened.status_code, opened.text)
        assert opened.text.startswith("0{"), opened.text
        handshake: dict[str, Any] = json.loads(opened.text[1:])
        self.sid = handshake["sid"]
        return handshake

    def get_params(self) -> dict[str, str]:
        return {**POLLING, "sid": self.sid}

    def get(self, **params: str) -> httpx.Response:
        return self.http.get("/socket.io/", params={**self.get_params(), **params})

    def post(self, body: str) -> httpx.Response:
        return self.http.post("/socket.io/", params={**POLLING, "sid": self.sid}, content=body)

    def connect(self) -> str:
        """Socket.IO CONNECT to ``/`` with the target's auth; returns the namespace sid."""
        assert self.post("40" + json.dumps(self.target.auth)).status_code == 200
        packets = self.packets()
        assert packets[0].startswith("40{"), packets
        sid: str = json.loads(packets[0][2:])["sid"]
        return sid

    def packets(self, timeout: float = 3.0) -> list[str]:
        """The packets of the next polls that bring anything but pings (which are answered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polled = self.get()
            assert polled.status_code == 200, (polled.status_code, polled.text)
            packets = polled.text.split(SEP)
            if "2" in packets:
                assert self.post("3").status_code == 200
                packets = [packet for packet in packets if packet != "2"]
            if packets:
                return packets
        raise TimeoutError(f"no packet but pings within {timeout}s")


def websocket(target: Target, *, answer_pings: bool = True, sid: str | None = None) -> RawClient:
    """A raw websocket to the target; without ``sid``, its OPEN packet is already read."""
    return RawClient(target.port, compression=None, answer_pings=answer_pings, sid=sid)


def ws_connect(client: RawClient, target: Target, namespace: str = "") -> str:
    """Socket.IO CONNECT over a websocket; returns the namespace sid."""
    prefix = f"{namespace}," if namespace else ""
    client.send(f"40{prefix}{json.dumps(target.auth)}")
    answer = client.recv()
    assert isinstance(answer, str) and answer.startswith(f"40{prefix}{{"), answer
    sid: str = json.loads(answer[2 + len(prefix) :])["sid"]
    return sid


def frames(client: RawClient, count: int, timeout: float = 3.0) -> list[str | bytes]:
    """The next ``count`` frames (pings are answered, not counted)."""
    deadline = time.monotonic() + timeout
    return [client.recv(max(0.01, deadline - time.monotonic())) for _ in range(count)]
