"""Engine.IO v4 over WebSocket: the upgrade from long-polling, one websocket per session, the
close, invalid frames (engine.io-protocol README, "Upgrade" and "WebSocket"; test-suite
"upgrade", "close", "message")."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.protocol.conformance.targets import Target
from tests.protocol.conformance.wire import Polling, websocket
from tests.protocol.raw import RawClient


def upgraded(target: Target, session: Polling) -> RawClient:
    """Upgrade ``session`` to a websocket: probe, then UPGRADE (no GET pending)."""
    client = websocket(target, sid=session.sid)
    client.send("2probe")
    assert client.recv() == "3probe"
    client.send("5")
    return client


def test_upgrade_from_polling(target: Target) -> None:
    """EIO "Upgrade": "send a noop packet to any pending GET", "3probe", then "5"."""
    with Polling(target) as session:
        session.open()
        with websocket(target, sid=session.sid) as client:
            client.send("2probe")
            assert client.recv() == "3probe"
            polled = session.get()
            assert (polled.status_code, polled.text) == (200, "6")
            client.send("5")
            assert connect_after_upgrade(client, target).startswith("40{")


def test_polling_after_upgrade_is_refused(target: Target) -> None:
    """EIO test-suite "ignores HTTP requests with same sid after upgrade": 400."""
    with Polling(target) as session:
        session.open()
        with upgraded(target, session) as client:
            polled = session.get()
            assert polled.status_code == 400, polled.text
            assert connect_after_upgrade(client, target).startswith("40{")


def test_no_noop_on_the_websocket(target: Target) -> None:
    """EIO test-suite "successfully upgrades": next ws frame answers the next packet."""
    with Polling(target) as session:
        session.open()
        with upgraded(target, session) as client:
            client.send("40" + json.dumps(target.auth))
            answer = client.recv()
    assert isinstance(answer, str) and answer.startswith("40{"), answer


def connect_after_upgrade(client: RawClient, target: Target) -> str:
    """CONNECT on an upgraded websocket; returns the answer (no NOOP comes first: tested on
    its own)."""
    client.send("40" + json.dumps(target.auth))
    answer = client.recv()
    assert isinstance(answer, str), answer
    return answer


def _second_websocket(target: Target, sid: str) -> int | None:
    """The HTTP status that refused a second websocket for ``sid``; None if it was closed
    after opening, without a frame."""
    url = f"{target.ws_url}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    try:
        second = connect(url, open_timeout=5, close_timeout=2, compression=None, legacy=True)
    except InvalidStatus as exc:
        return exc.response.status_code
    with second:
        try:
            frame = second.recv(timeout=3)
        except Exception:
            return None
    pytest.fail(f"a second websocket for the session got a frame: {frame!r}")


def test_second_websocket_is_refused(target: Target) -> None:
    """EIO WebSocket: "more than one WebSocket connection per session ... MUST close"."""
    with Polling(target) as session:
        session.open()
        with upgraded(target, session) as client:
            status = _second_websocket(target, session.sid)
            assert status is None or 400 <= status < 500, status
            assert connect_after_upgrade(client, target).startswith("40{")


def test_second_websocket_is_400(target: Target) -> None:
    """EIO "more than one WebSocket ... per session": refused 400, as the reference server."""
    with Polling(target) as session:
        session.open()
        with upgraded(target, session):
            status = _second_websocket(target, session.sid)
    # The spec only asks for the close; the reference server (engine.io's verify) refuses
    # the handshake as a bad request.
    assert status == 400


def test_close_packet_closes_the_websocket(target: Target) -> None:
    """EIO test-suite "forcefully closes the session": CLOSE "1" closes the socket."""
    with websocket(target) as client:
        client.send("1")
        _, frames = client.wait_closed(timeout=2)
    assert frames == [], frames


@pytest.mark.parametrize("frame", ["abc", "", "9"], ids=["abc", "empty", "unknown-type"])
def test_invalid_frame_closes_the_websocket(target: Target, frame: str) -> None:
    """EIO test-suite "closes the session upon invalid packet format"."""
    with websocket(target) as client:
        started = time.monotonic()
        client.send(frame)
        client.wait_closed(timeout=2)
    # Closed for the frame, not by the CONNECT timeout of a session that never connected.
    assert time.monotonic() - started < 0.9
