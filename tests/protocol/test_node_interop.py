"""The browser's view: Node's socket.io-client 4.8 (JSON and socket.io-msgpack-parser) against
a live node, over WebSocket and long-polling: connect and auth, requests with acks, events, and
server-initiated disconnects (which socket.io-msgpack-parser could not decode from
python-socketio's msgpack packets) that the client must not take for a transport failure."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.protocol.node_client import NodeClient, Record
from tests.support.live import API_KEY, LiveServer, make_token

ENVELOPE_KEYS = {"channel", "type", "offset", "epoch", "ts", "data"}
ERROR_KEYS = {"code", "message", "retryable"}
SUBSCRIBE_ACK_KEYS = {"ok", "channel", "epoch", "offset", "recovered", "publications", "state"}


@dataclass
class Setup:
    server: LiveServer
    parser: str
    transport: str

    def client(self, *, lifetime_s: float = 30.0) -> AbstractAsyncContextManager[NodeClient]:
        return NodeClient.start(self.server.url, self.parser, self.transport, lifetime_s=lifetime_s)

    def token(self, **claims: Any) -> str:
        return self.server.token("alice", channels=["room:*"], **claims)


@pytest.fixture(
    params=[
        pytest.param(("json", "websocket"), id="json-websocket"),
        pytest.param(("json", "polling"), id="json-polling"),
        pytest.param(("msgpack", "websocket"), id="msgpack-websocket"),
        pytest.param(("msgpack", "polling"), id="msgpack-polling"),
    ]
)
def setup(request: pytest.FixtureRequest) -> Setup:
    parser, transport = request.param
    server = request.getfixturevalue("server" if parser == "json" else "msgpack_server")
    return Setup(server, parser, transport)


@pytest.fixture
async def http(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=setup.server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
    ) as client:
        yield client


def new_channel() -> str:
    return f"room:interop-{uuid.uuid4().hex[:10]}"


async def publish(http: httpx.AsyncClient, channel: str, event: str, data: Any) -> dict[str, Any]:
    response = await http.post(
        "/api/publish", json={"channel": channel, "event": event, "data": data}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_envelope(envelope: Any, *, channel: str, type_: str, epoch: str) -> None:
    assert isinstance(envelope, dict)
    assert set(envelope) == ENVELOPE_KEYS, envelope
    assert envelope["channel"] == channel
    assert envelope["type"] == type_
    assert envelope["epoch"] == epoch
    assert isinstance(envelope["offset"], int) and envelope["offset"] > 0
    assert isinstance(envelope["ts"], int | float)
    assert abs(envelope["ts"] - time.time()) < 60


def assert_error_ack(ack: Any, code: str) -> None:
    assert isinstance(ack, dict) and ack.get("ok") is False, ack
    assert set(ack["error"]) >= ERROR_KEYS, ack
    assert ack["error"]["code"] == code, ack
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
    assert isinstance(ack["error"]["retryable"], bool)


async def connected(client: NodeClient, token: str, transport: str) -> Record:
    record = await client.connect({"token": token})
    assert record["type"] == "connect", client.describe()
    assert record["transport"] == transport
    return record


DATA_SAMPLES: list[Any] = [
    {"text": "héllo ✓ 你好", "n": 1},
    {"nested": {"list": [1, 2.5, None, True, "x"], "empty": {}}, "big": 2**53 - 1},
    "just a string",
    None,
    [1, [2, [3]]],
]


async def test_subscribe_ack_and_live_publications(setup: Setup, http: httpx.AsyncClient) -> None:
    channel = new_channel()
    async with setup.client() as client:
        await connected(client, setup.token(), setup.transport)

        ack = await client.emit("subscribe", {"channel": channel})
        assert set(ack) == SUBSCRIBE_ACK_KEYS, ack
        assert ack["ok"] is True
        assert ack["channel"] == channel
        assert isinstance(ack["epoch"], str) and ack["epoch"]
        assert ack["offset"] == 0
        assert ack["recovered"] is False
        assert ack["publications"] == []
        assert ack["state"] is None  # room channels carry no state
        epoch = ack["epoch"]

        published = [await publish(http, channel, "chat.message", data) for data in DATA_SAMPLES]
        received = [
            await client.expect("event", where=lambda r: r["name"] == "chat.message")
            for _ in DATA_SAMPLES
        ]
        for record, data, result in zip(received, DATA_SAMPLES, published, strict=True):
            assert len(record["args"]) == 1, record
            envelope = record["args"][0]
            assert_envelope(envelope, channel=channel, type_="chat.message", epoch=epoch)
            assert envelope["data"] == data
            assert envelope["offset"] == result["offset"]
            assert result["epoch"] == epoch
        offsets = [r["args"][0]["offset"] for r in received]
        assert offsets == list(range(1, len(DATA_SAMPLES) + 1))

        # Errors come back as acks with the same shape over both parsers.
        assert_error_ack(await client.emit("subscribe", {"channel": "job:42"}), "permission_denied")
        assert_error_ack(await client.emit("subscribe", {"channel": 42}), "invalid_payload")
        assert_error_ack(await client.emit("subscribe", {"channel": "nope:1"}), "unknown_channel")
        assert_error_ack(await client.emit("no.such.event", {}), "invalid_payload")

        # A client publish on a room reaches the subscribed client too.
        ack = await client.emit(
            "publish", {"channel": channel, "event": "chat.typed", "data": {"k": [1, "two"]}}
        )
        assert ack["ok"] is True, ack
        live = await client.expect("event", where=lambda r: r["name"] == "chat.typed")
        assert_envelope(live["args"][0], channel=channel, type_="chat.typed", epoch=epoch)
        assert live["args"][0]["offset"] == ack["offset"] == len(DATA_SAMPLES) + 1

        await client.disconnect()
        assert not client.seen("reconnect_attempt"), client.describe()


BAD_TOKENS: list[tuple[str, Any, str]] = [
    ("no auth", None, "unauthorized"),
    ("empty auth", {}, "unauthorized"),
    ("not a JWT", {"token": "not-a-jwt"}, "unauthorized"),
    ("wrong key", {"token": make_token("alice", secret="x" * 48)}, "unauthorized"),
    ("no sub", {"token": make_token(None)}, "unauthorized"),
    ("expired", {"token": make_token("alice", ttl=-60)}, "token_expired"),
]


async def test_connect_errors_carry_codes(setup: Setup) -> None:
    async with setup.client() as client:
        for label, auth, code in BAD_TOKENS:
            record = await client.connect(auth)
            assert record["type"] == "connect_error", f"{label}: {client.describe()}"
            assert isinstance(record["message"], str) and record["message"], label
            data = record["data"]
            assert isinstance(data, dict), f"{label}: {record}"
            assert data["code"] == code, f"{label}: {record}"
            assert set(data) >= ERROR_KEYS, f"{label}: {record}"
            assert data["retryable"] is False, f"{label}: {record}"
        # socket.io-client does not retry a rejection by the server on its own: a retry
        # would be due 200 ms after the last rejection (reconnectionDelay), before this tick.
        await client.tick(400)
        assert not client.seen("reconnect_attempt"), client.describe()
        assert len(client.seen("connect_error")) == len(BAD_TOKENS), client.describe()
        state = await client.state()
        assert state["connected"] is False and state["active"] is False, state
        # ...and the same socket connects once it has a good token.
        await connected(client, setup.token(), setup.transport)


async def test_server_disconnect_is_seen_as_io_server_disconnect(setup: Setup) -> None:
    """Token expiry while connected: ``server.notice`` first, then a clean Socket.IO DISCONNECT
    that the client does not treat as a transport failure (with msgpack too, whose DISCONNECT
    python-socketio used to encode with a ``data`` the JS parser refuses)."""
    async with setup.client() as client:
        await connected(client, setup.token(ttl=2.0), setup.transport)
        ack = await client.emit("subscribe", {"channel": new_channel()})
        assert ack["ok"] is True, ack

        notice = await client.expect(
            "event", where=lambda r: r["name"] == "server.notice", within=6
        )
        disconnect = await client.expect("disconnect", within=3)
        body = notice["args"][0]
        assert body["code"] == "token_expired", body
        assert body["reconnect"] is True, body
        assert isinstance(body["message"], str)
        assert isinstance(body["retry_after_ms"], int)
        assert client.position(notice) < client.position(disconnect), client.describe()
        assert disconnect["reason"] == "io server disconnect", client.describe()
        assert disconnect["active"] is False, client.describe()

        # No parse error, no automatic reconnect loop: an attempt would be due 200 ms after
        # the disconnect (reconnectionDelay), before this tick.
        await client.tick(400)
        assert not client.seen("reconnect_attempt"), client.describe()
        assert len(client.seen("connect")) == 1, client.describe()
        assert len(client.seen("disconnect")) == 1, client.describe()
        assert not client.seen("connect_error"), client.describe()
        state = await client.state()
        assert state["connected"] is False and state["active"] is False, state

        # reconnect: true means "come back with a fresh token", and that works.
        await connected(client, setup.token(), setup.transport)


async def test_recovery_round_trip(setup: Setup, http: httpx.AsyncClient) -> None:
    channel = new_channel()
    token = setup.token()
    async with setup.client() as client:
        await connected(client, token, setup.transport)
        ack = await client.emit("subscribe", {"channel": channel})
        assert ack["ok"] is True, ack
        for i in range(2):
            await publish(http, channel, "chat.message", {"i": i})
        live = [
            await client.expect("event", where=lambda r: r["name"] == "chat.message")
            for _ in range(2)
        ]
        last = live[-1]["args"][0]
        since = {"epoch": last["epoch"], "offset": last["offset"]}

        disconnected = await client.disconnect()
        assert disconnected["reason"] == "io client disconnect"

        missed = [
            await publish(http, channel, "chat.message", {"i": i, "missed": True})
            for i in range(2, 7)
        ]

        await connected(client, token, setup.transport)
        ack = await client.emit("subscribe", {"channel": channel, "since": since})
        assert ack["ok"] is True, ack
        assert ack["recovered"] is True, ack
        publications = ack["publications"]
        assert [p["offset"] for p in publications] == [m["offset"] for m in missed], ack
        assert [p["data"] for p in publications] == [{"i": i, "missed": True} for i in range(2, 7)]
        for envelope in publications:
            assert_envelope(envelope, channel=channel, type_="chat.message", epoch=since["epoch"])
        assert ack["epoch"] == since["epoch"]
        assert ack["offset"] == missed[-1]["offset"]
        # Nothing published while away arrived as a live event.
        assert len(client.seen("event")) == 2, client.describe()

        # The recovered subscription is live again, with no gap and no duplicate.
        after = await publish(http, channel, "chat.message", {"i": 7})
        record = await client.expect("event", where=lambda r: r["name"] == "chat.message")
        assert record["args"][0]["offset"] == after["offset"] == missed[-1]["offset"] + 1
        assert len(client.seen("event")) == 3, client.describe()

        # A position from another epoch is reported, not silently papered over.
        other = new_channel()
        ack = await client.emit(
            "subscribe", {"channel": other, "since": {"epoch": "not-an-epoch", "offset": 3}}
        )
        assert ack["ok"] is True, ack
        assert ack["recovered"] is False, ack
