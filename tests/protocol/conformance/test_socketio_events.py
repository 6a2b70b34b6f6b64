"""Socket.IO v5 events: plain and binary events, acknowledgements and their ids, malformed
packets (socket.io-protocol README, "Sending and receiving data", "Acknowledgement",
"Packet encoding"; test-suite "message", "acknowledgements")."""

from __future__ import annotations

import json
import time

import pytest

from tests.protocol.conformance.targets import CONNECT_TIMEOUT_S, Target
from tests.protocol.conformance.wire import (
    PLACEHOLDER_0,
    PLACEHOLDER_1,
    frames,
    websocket,
    ws_connect,
)

PLACEHOLDERS = f"{PLACEHOLDER_0},{PLACEHOLDER_1}"


def test_plain_text_event(echo: Target) -> None:
    """SIO test-suite "should send a plain-text packet"."""
    with websocket(echo) as client:
        ws_connect(client, echo)
        client.send('42["message",1,"2",{"3":[true]}]')
        assert client.recv() == '42["message-back",1,"2",{"3":[true]}]'


@pytest.mark.parametrize("ack_id", [0, 456, 2**31])
def test_ack_carries_the_event_id(target: Target, ack_id: int) -> None:
    """SIO "MUST respond with an ACK packet with the same event ID"."""
    event, args = target.ack_request()
    with websocket(target) as client:
        ws_connect(client, target)
        client.send(f"42{ack_id}{json.dumps([event, *args])}")
        answer = client.recv()
    assert isinstance(answer, str) and answer.startswith(f"43{ack_id}["), answer
    target.check_ack(json.loads(answer[2 + len(str(ack_id)) :]))


def test_acks_of_several_events_keep_their_ids(target: Target) -> None:
    """SIO "an ACK packet with the same event ID", for several events at once."""
    event, args = target.ack_request()
    ids = [3, 1, 2]
    with websocket(target) as client:
        ws_connect(client, target)
        for ack_id in ids:
            client.send(f"42{ack_id}{json.dumps([event, *args])}")
        answers = [str(frame) for frame in frames(client, len(ids))]
    assert sorted(answer[:3] for answer in answers) == ["431", "432", "433"], answers


def test_binary_event(echo: Target) -> None:
    """SIO test-suite "should send a packet with binary attachments"."""
    with websocket(echo) as client:
        ws_connect(client, echo)
        client.send(f'452-["message",1,{PLACEHOLDERS}]')
        client.send(bytes([1, 2, 3]))
        client.send(bytes([4, 5, 6]))
        received = frames(client, 3)
    assert received == [
        f'452-["message-back",1,{PLACEHOLDERS}]',
        bytes([1, 2, 3]),
        bytes([4, 5, 6]),
    ]


def test_binary_event_with_ack(echo: Target) -> None:
    """SIO test-suite "should send a packet with binary attachments and an ack"."""
    with websocket(echo) as client:
        ws_connect(client, echo)
        client.send(f'452-789["message-with-ack",1,{PLACEHOLDERS}]')
        client.send(bytes([1, 2, 3]))
        client.send(bytes([4, 5, 6]))
        received = frames(client, 3)
    assert received == [f"462-789[1,{PLACEHOLDERS}]", bytes([1, 2, 3]), bytes([4, 5, 6])]


def test_binary_event_reaches_tandem(tandem: Target) -> None:
    """SIO "BINARY_EVENT" with an id: Tandem answers an ACK of the same id."""
    with websocket(tandem) as client:
        ws_connect(client, tandem)
        client.send(f'451-5["subscribe",{{"channel":"room:conformance","x":{PLACEHOLDER_0}}}]')
        client.send(bytes([1, 2, 3]))
        answer = client.recv()
    assert isinstance(answer, str) and answer.startswith("435["), answer


@pytest.mark.parametrize(
    "frame",
    ["4abc", "42{}", '42abc["message-with-ack",1,"2",{"3":[false]}]', "42[]"],
    ids=["unknown-type", "payload-not-array", "ack-id-abc", "empty-array"],
)
def test_malformed_packet_closes_the_connection(target: Target, frame: str) -> None:
    """SIO "MUST be a non-empty array ... MUST close the connection"."""
    with websocket(target) as client:
        ws_connect(client, target)
        started = time.monotonic()
        client.send(frame)
        client.wait_closed(timeout=3)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S
