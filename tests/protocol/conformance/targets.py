"""The two servers the conformance suite runs against, started once per test session.

``tandem``: ``tandem serve`` with the conformance profile (sub-second heartbeat, a short
CONNECT timeout). ``echo``: the same transport with echo handlers (``echo_app``), on the same
profile. Both are subprocesses on ephemeral ports, stopped by PID.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.live import ROOT, LiveServer, _wait_ready, free_port, live_server, stop

# The profile of the protocols' own test suites: pingInterval 300 ms, pingTimeout 200 ms.
PING_INTERVAL_S = 0.3
PING_TIMEOUT_S = 0.2
CONNECT_TIMEOUT_S = 1.0
PROFILE_ENV = {
    "TANDEM_PING_INTERVAL_S": str(PING_INTERVAL_S),
    "TANDEM_PING_TIMEOUT_S": str(PING_TIMEOUT_S),
    "TANDEM_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
    # Every malformed packet ends its session, as the protocols require.
    "TANDEM_PROTOCOL_ERROR_LIMIT": "1",
}


@dataclass
class Target:
    """A server under test and what a client must show it to join the main namespace."""

    name: str
    port: int
    auth: dict[str, Any] = field(default_factory=dict)
    node: LiveServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def has_echo(self) -> bool:
        return self.name == "echo"

    def ack_request(self) -> tuple[str, list[Any]]:
        """An event the target answers with an ack: an echo, or a Tandem subscribe."""
        if self.has_echo:
            return "message-with-ack", [1, "2", {"3": [False]}]
        return "subscribe", [{"channel": "room:conformance"}]

    def check_ack(self, data: Any) -> None:
        """``data`` is the ACK's payload for ``ack_request``."""
        if self.has_echo:
            assert data == [1, "2", {"3": [False]}], data
        else:
            assert isinstance(data, list) and len(data) == 1 and data[0]["ok"] is True, data


@contextmanager
def tandem_target(tmp: Path) -> Iterator[Target]:
    with live_server(tmp, PROFILE_ENV) as node:
        token = node.token("alice", channels=["room:*"])
        yield Target("tandem", node.port, {"token": token}, node)


@contextmanager
def echo_target(tmp: Path) -> Iterator[Target]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp / f"echo-{port}.log"
    command = [
        sys.executable,
        "-m",
        "tests.protocol.conformance.echo_app",
        f"--port={port}",
        f"--ping-interval={PING_INTERVAL_S}",
        f"--ping-timeout={PING_TIMEOUT_S}",
        f"--connect-timeout={CONNECT_TIMEOUT_S}",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    # LiveServer gives the echo app the same readiness wait and PID-based stop.
    node = LiveServer(f"http://127.0.0.1:{port}", port, process, log_path, {})
    try:
        _wait_ready(node, 20.0)
        yield Target("echo", port, {}, node)
    finally:
        stop(node)
