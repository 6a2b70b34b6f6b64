"""Socket.IO v5 connection to a namespace: CONNECT, CONNECT_ERROR, unknown namespaces, what
comes before CONNECT, and the CONNECT timeout (socket.io-protocol README, "Connection to a
namespace"; test-suite "connect", "disconnect")."""

from __future__ import annotations

import json
import time

from tests.protocol.conformance.targets import CONNECT_TIMEOUT_S, Target
from tests.protocol.conformance.wire import Polling, websocket, ws_connect

# How late the CONNECT timeout may close a session (timer, event loop, 2 loaded cores).
CLOSE_SLACK_S = 2.0


def test_connect_to_the_main_namespace(target: Target) -> None:
    """SIO "Connection": "a CONNECT packet ... with the session ID in the payload"."""
    with websocket(target) as client:
        client.send("40" + json.dumps(target.auth))
        answer = client.recv()
    assert isinstance(answer, str) and answer.startswith("40{"), answer
    data = json.loads(answer[2:])
    assert list(data) == ["sid"] and isinstance(data["sid"], str) and data["sid"]


def test_connect_over_polling(target: Target) -> None:
    """SIO "Sample session": CONNECT in a POST, its answer in the next GET."""
    with Polling(target) as session:
        session.open()
        assert session.connect()


def test_refused_connect_is_connect_error(tandem: Target) -> None:
    """SIO "or a CONNECT_ERROR packet if the connection is not allowed"."""
    with websocket(tandem) as client:
        client.send('40{"token":"not-a-token"}')
        answer = client.recv()
    assert isinstance(answer, str) and answer.startswith("44{"), answer
    data = json.loads(answer[2:])
    assert isinstance(data["message"], str) and data["message"], data


def test_unknown_namespace_is_refused(target: Target) -> None:
    """SIO test-suite "should disallow connection to an unknown namespace"."""
    with websocket(target) as client:
        client.send("40/random,")
        answer = client.recv()
    assert answer == '44/random,{"message":"Invalid namespace"}'


def test_unknown_namespace_is_connect_error(target: Target) -> None:
    """SIO unknown namespace: what holds today, a CONNECT_ERROR for it."""
    with websocket(target) as client:
        client.send("40/random,")
        answer = client.recv()
        assert isinstance(answer, str) and answer.startswith("44/random,"), answer
        assert ws_connect(client, target)


def test_invalid_connect_closes_the_connection(target: Target) -> None:
    """SIO test-suite "should disallow connection with an invalid handshake"."""
    with websocket(target) as client:
        started = time.monotonic()
        client.send("4abc")
        client.wait_closed(timeout=CONNECT_TIMEOUT_S + CLOSE_SLACK_S)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S * 0.9, "closed by the CONNECT timeout"


def test_event_before_connect_closes_the_connection(target: Target) -> None:
    """SIO "If the server does not receive a CONNECT packet first ... MUST close"."""
    with websocket(target) as client:
        started = time.monotonic()
        client.send('42["message",1]')
        client.wait_closed(timeout=CONNECT_TIMEOUT_S + CLOSE_SLACK_S)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S * 0.9, "closed by the CONNECT timeout"


def test_websocket_without_connect_is_closed(target: Target) -> None:
    """SIO "CONNECT packet first": Tandem closes a silent websocket at its timeout."""
    with websocket(target) as client:
        opened = time.monotonic()
        _, frames = client.wait_closed(timeout=CONNECT_TIMEOUT_S + CLOSE_SLACK_S)
    assert time.monotonic() - opened >= CONNECT_TIMEOUT_S * 0.9
    assert frames in ([], ["1"]), frames


def test_polling_without_connect_is_closed(target: Target) -> None:
    """SIO "CONNECT packet first": Tandem closes a silent polling session too."""
    with Polling(target) as session:
        opened = time.monotonic()
        session.open()
        deadline = opened + CONNECT_TIMEOUT_S + CLOSE_SLACK_S
        while True:
            polled = session.get()
            if polled.status_code == 400 or polled.text in ("", "1"):
                break
            assert polled.text == "2", polled.text
            assert time.monotonic() < deadline, "still open after the CONNECT timeout"
            session.post("3")
    assert time.monotonic() - opened >= CONNECT_TIMEOUT_S * 0.9


def test_disconnect_from_the_main_namespace_keeps_engineio(target: Target) -> None:
    """SIO test-suite "should disconnect from the main namespace": then a PING."""
    with websocket(target, answer_pings=False) as client:
        ws_connect(client, target)
        client.send("41")
        assert client.recv() == "2"
        client.send("3")
        assert client.closed is None
