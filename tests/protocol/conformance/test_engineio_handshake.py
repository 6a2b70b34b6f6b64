"""Engine.IO v4 handshake, over long-polling and WebSocket (engine.io-protocol README,
"Handshake" and "Transports"; test-suite "handshake")."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from tests.protocol.conformance.targets import PING_INTERVAL_S, PING_TIMEOUT_S, Target
from tests.protocol.conformance.wire import HANDSHAKE_KEYS, POLLING, Polling, websocket


def test_polling_handshake_opens_a_session(target: Target) -> None:
    """EIO "Handshake": "MUST respond with an open packet" (sid, upgrades, pingInterval...)."""
    with Polling(target) as session:
        handshake = session.open()
    assert sorted(handshake) == HANDSHAKE_KEYS
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    assert handshake["upgrades"] == ["websocket"]
    assert isinstance(handshake["maxPayload"], int) and handshake["maxPayload"] > 0


def test_websocket_handshake_opens_a_session(target: Target) -> None:
    """EIO "Handshake", WebSocket-only session: the open packet, upgrades []."""
    with websocket(target) as client:
        handshake = client.handshake
    assert sorted(handshake) == HANDSHAKE_KEYS
    assert isinstance(handshake["sid"], str) and handshake["sid"]
    assert handshake["upgrades"] == []


def test_handshake_intervals_are_milliseconds(target: Target) -> None:
    """EIO "Handshake": pingInterval, pingTimeout "(in milliseconds)": 300 and 200."""
    with Polling(target) as session:
        handshake = session.open()
    assert handshake["pingTimeout"] == round(PING_TIMEOUT_S * 1000)
    assert handshake["pingInterval"] == round(PING_INTERVAL_S * 1000)


def test_handshake_ping_timeout_is_milliseconds(target: Target) -> None:
    """EIO "Handshake": pingTimeout "(in milliseconds)", sub-second 0.2 s as 200."""
    with websocket(target) as client:
        assert client.handshake["pingTimeout"] == round(PING_TIMEOUT_S * 1000)


@pytest.mark.parametrize(
    "query",
    [
        {"transport": "polling"},
        {"EIO": "abc", "transport": "polling"},
        {"EIO": "3", "transport": "polling"},
        {"EIO": "4"},
        {"EIO": "4", "transport": "abc"},
    ],
    ids=["no-EIO", "EIO-abc", "EIO-3", "no-transport", "transport-abc"],
)
def test_polling_handshake_refuses_bad_query(target: Target, query: dict[str, str]) -> None:
    """EIO polling: "If a mandatory query parameter is missing ... MUST respond ... 400"."""
    with httpx.Client(base_url=target.url, timeout=5) as http:
        refused = http.get("/socket.io/", params=query)
    assert refused.status_code == 400, refused.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_handshake_refuses_other_methods(target: Target, method: str) -> None:
    """EIO test-suite "fails with an invalid request method": 400."""
    with httpx.Client(base_url=target.url, timeout=5) as http:
        refused = http.request(method, "/socket.io/", params=POLLING)
    assert refused.status_code == 400, (method, refused.text)


@pytest.mark.parametrize(
    "query",
    ["transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc"],
    ids=["no-EIO", "EIO-abc", "no-transport", "transport-abc"],
)
def test_websocket_handshake_refuses_bad_query(target: Target, query: str) -> None:
    """EIO WebSocket: "If a mandatory query parameter is missing ... MUST close"."""
    url = f"{target.ws_url}/socket.io/?{query}"
    try:
        client = connect(url, open_timeout=5, close_timeout=2, compression=None, legacy=True)
    except InvalidHandshake:  # refused before it opened (InvalidStatus is one)
        return
    # Or opened, then closed without a frame (a frame or a timeout fails the test).
    with client, pytest.raises(ConnectionClosed):
        client.recv(timeout=3)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_sid_is_400(target: Target, method: str) -> None:
    """EIO polling: "MUST return an HTTP 400 response if the session ID ... is not known"."""
    with httpx.Client(base_url=target.url, timeout=5) as http:
        refused = http.request(method, "/socket.io/", params={**POLLING, "sid": "unknown"})
    assert refused.status_code == 400, refused.text
