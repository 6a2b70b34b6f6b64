"""A server-side disconnect ends the Engine.IO connection too: Tandem cuts off a slow
consumer with ``server.notice`` and a Socket.IO DISCONNECT on its only namespace, and then
the transport must close (engine.io-protocol: a session's end closes its WebSocket; the
client must not have to wait for a heartbeat to notice)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.test_slow_clients import PAD, RawClient as UnreadClient, publish_all
from tests.support.live import LiveServer, live_server

CLOSE_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # The default heartbeat (25 s + 20 s), so that only the cut-off can close the transport
    # of a client that stops reading; the smallest bound, so that it is cut off fast.
    env = {"TANDEM_CLIENT_BUFFER_BYTES": str(16 * 1024)}
    with live_server(Path(tmp_path_factory.mktemp("conformance-slow")), env) as server:
        yield server


def slow_disconnects(node: LiveServer) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=5).text
    match = re.search(r'^tandem_disconnects_total\{reason="slow"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def frames_until_closed(client: UnreadClient, timeout: float) -> list[str]:
    """Every text frame until the server's close frame or EOF; TimeoutError if neither."""
    client.sock.settimeout(timeout)
    received: list[str] = []
    while True:
        try:
            received.append(client.text())
        except EOFError:
            return received
        except TimeoutError:
            raise TimeoutError(f"still open {timeout}s after {received[-2:]!r}") from None


def cut_off(node: LiveServer) -> UnreadClient:
    """A client that subscribed, then stopped reading until the node cut it off as slow."""
    channel = f"room:slow-{uuid.uuid4().hex[:8]}"
    client = UnreadClient(node, node.token("slow", channels=["room:*"]))
    try:
        before = slow_disconnects(node)
        client.subscribe(channel)
        deadline = time.monotonic() + 30
        published = 0
        while slow_disconnects(node) == before:  # the node says it cut the client off
            assert time.monotonic() < deadline, f"not cut off after {published} publications"
            publish_all(node, channel, [("demo.bulk", {"i": published, "pad": PAD})] * 10)
            published += 10
    except BaseException:
        client.close()
        raise
    return client


def test_a_slow_consumer_is_told_and_disconnected(node: LiveServer) -> None:
    """SIO "Disconnection": the server's cut-off is notice "slow", then "41"."""
    client = cut_off(node)
    try:
        client.sock.settimeout(CLOSE_WITHIN_S)
        received = [client.text()]
        while received[-1] != "41":
            received.append(client.text())
    finally:
        client.close()
    notice = received[-2]
    assert notice.startswith('42["server.notice",{"code":"slow",'), received[-3:]


def test_a_slow_consumer_cut_off_is_closed_at_the_transport(node: LiveServer) -> None:
    """A server DISCONNECT of the only namespace closes the transport."""
    client = cut_off(node)
    try:
        received = frames_until_closed(client, CLOSE_WITHIN_S)
    finally:
        client.close()
    assert "41" in received, received[-3:]
    # Past the DISCONNECT, at most Engine.IO's CLOSE packet before the close frame.
    assert received[received.index("41") + 1 :] in ([], ["1"]), received[-3:]
