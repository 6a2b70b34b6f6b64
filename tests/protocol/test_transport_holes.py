"""Two holes at the raw-frame level: a long-polling POST that never got an answer when its
garbage got the client cut off, and connections that never show a token held for ever."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.protocol.raw import RawClient
from tests.support.live import LiveServer, live_server

CONNECT_TIMEOUT_S = 1.0
POLLING = {"EIO": "4", "transport": "polling"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"TANDEM_PROTOCOL_ERROR_LIMIT": "3", "TANDEM_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S)}
    with live_server(Path(tmp_path_factory.mktemp("holes")), env) as node:
        yield node


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def open_polling(http: httpx.Client) -> str:
    opened = http.get("/socket.io/", params=POLLING)
    assert opened.status_code == 200 and opened.text.startswith("0{"), opened.text
    sid: str = json.loads(opened.text[1:])["sid"]
    return sid


def test_a_post_whose_garbage_ends_the_session_is_answered_at_once(
    http: httpx.Client,
) -> None:
    # Three malformed packets in one body, and no GET waiting to carry the CLOSE packet: the
    # node cuts the client off, and the POST itself must still get its answer.
    sid = open_polling(http)
    started = time.monotonic()
    posted = http.post("/socket.io/", params={**POLLING, "sid": sid}, content="4a\x1e4b\x1e4c")
    assert posted.status_code == 200, posted.text
    assert time.monotonic() - started < 2.0
    # The session is over: a poll gets its CLOSE packet or, once it is gone, a refusal; not
    # a long wait.
    polled = http.get("/socket.io/", params={**POLLING, "sid": sid})
    assert polled.status_code == 400 or polled.text.split("\x1e")[-1] == "1", polled.text


def test_a_connection_that_never_sends_connect_is_closed(server: LiveServer, token: str) -> None:
    started = time.monotonic()
    with (
        RawClient(server.port) as silent,
        RawClient(server.port) as refused,
        RawClient(server.port) as member,
    ):
        assert "sid" in member.connect_namespace(token)
        # A CONNECT refused for its token does not count as connected either.
        refused_with = refused.connect_namespace("not-a-token")
        assert refused_with["data"]["code"] == "unauthorized", refused_with
        closed, frames = silent.wait_closed(timeout=CONNECT_TIMEOUT_S + 5)
        assert time.monotonic() - started >= CONNECT_TIMEOUT_S, "closed before the timeout"
        assert frames in ([], ["1"]), frames  # at most Engine.IO's CLOSE packet
        refused.wait_closed(timeout=5)
        # The client that connected in time stays.
        member.probe()
        assert member.closed is None


def test_a_polling_session_that_never_connects_is_closed(http: httpx.Client) -> None:
    started = time.monotonic()  # before the handshake, where the node's timer starts
    sid = open_polling(http)
    # The long-poll waits for pings; the node ends the session once the timeout has passed.
    deadline = started + CONNECT_TIMEOUT_S + 5
    while True:
        polled = http.get("/socket.io/", params={**POLLING, "sid": sid})
        if polled.status_code == 400 or "1" in polled.text.split("\x1e"):
            break
        assert time.monotonic() < deadline, f"still open: {polled.text!r}"
        http.post("/socket.io/", params={**POLLING, "sid": sid}, content="3")  # pong
    assert time.monotonic() - started >= CONNECT_TIMEOUT_S


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.token("alice", channels=["room:*"])


def test_requests_the_spec_refuses_are_400(http: httpx.Client) -> None:
    # A GET without a transport must not open a session; other methods are a bad handshake.
    no_transport = http.get("/socket.io/", params={"EIO": "4"})
    assert no_transport.status_code == 400, no_transport.text
    assert no_transport.json() == {"code": 0, "message": "Transport unknown"}
    for method in ("PUT", "DELETE", "PATCH"):
        refused = http.request(method, "/socket.io/", params=POLLING)
        assert refused.status_code == 400, (method, refused.text)
        assert refused.json() == {"code": 2, "message": "Bad handshake method"}
    # The handshake itself still works.
    assert open_polling(http)
