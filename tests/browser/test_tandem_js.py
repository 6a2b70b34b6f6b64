"""tandem.js in a real browser: recovery after a network drop, resync, server-initiated
disconnects, and the vendored socket.io-client it runs on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.support.live import LiveServer

# Connects with the first token, then the next ones on each reconnect (the last one sticks).
START = """([channel, tokens]) => {
  window.received = []; window.states = []; window.connection = []; window.errors = [];
  window.receivedAt = [];  // how many had been received at each connection state
  window.client = Tandem.connect("", {
    token: () => (tokens.length > 1 ? tokens.shift() : tokens[0]),
    onConnection: (state) => { connection.push(state); receivedAt.push(received.length); },
    onError: (error) => errors.push(error.code),
  });
  client.subscribe(channel, (e) => received.push({n: e.data.n, offset: e.offset}), {
    onState: (state, ack) => states.push({recovered: ack.recovered, offset: ack.offset}),
  });
}"""


@pytest.fixture
def harness(page: Page, shop: LiveServer) -> Iterator[Page]:
    """A page of the node's origin with socket.io-client and tandem.js loaded, nothing else.

    It must come from the node itself: Chromium's local network access checks refuse a
    connection to 127.0.0.1 from a page Playwright made up (``route.fulfill``)."""
    page.goto(f"{shop.url}/health/live")
    page.add_script_tag(url="/static/vendor/socket.io.min.js")
    page.add_script_tag(url="/static/tandem.js")
    yield page
    page.evaluate("window.client && window.client.close()")


def start(page: Page, channel: str, *tokens: str) -> None:
    page.evaluate(START, [channel, list(tokens)])
    page.wait_for_function("window.states.length === 1")


def publish(server: LiveServer, channel: str, numbers: range) -> None:
    with server.api() as api:
        for n in numbers:
            response = api.post(
                "/api/publish", json={"channel": channel, "event": "test.number", "data": {"n": n}}
            )
            assert response.status_code in (200, 202), response.text


def received(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("window.received")
    return result


def wait_received(page: Page, count: int, timeout_ms: int = 5_000) -> list[dict[str, Any]]:
    page.wait_for_function(f"window.received.length >= {count}", timeout=timeout_ms)
    return received(page)


def assert_once_in_order(messages: list[dict[str, Any]], numbers: range) -> None:
    assert [m["n"] for m in messages] == list(numbers), messages
    offsets = [m["offset"] for m in messages]
    assert offsets == sorted(set(offsets)), messages


def test_the_vendored_client_is_socket_io_4_8(harness: Page, shop: LiveServer) -> None:
    assert harness.evaluate("typeof io === 'function' && typeof io.Manager === 'function'")
    with httpx.Client(base_url=shop.url, timeout=5) as http:
        script = http.get("/static/vendor/socket.io.min.js")
        licence = http.get("/static/vendor/socket.io-client.LICENSE")
    assert script.text.startswith("/*!\n * Socket.IO v4.8.")
    assert "javascript" in script.headers["content-type"]
    assert licence.status_code == 200 and "MIT License" in licence.text


def test_publications_made_while_offline_arrive_once_in_order_after_reconnect(
    context: BrowserContext, harness: Page, shop: LiveServer
) -> None:
    channel = "room:offline"
    start(harness, channel, shop.token("bob", channels=[channel]))
    publish(shop, channel, range(1, 4))
    wait_received(harness, 3)

    context.set_offline(True)
    harness.wait_for_function("window.connection.at(-1) === 'offline'")
    publish(shop, channel, range(4, 9))

    context.set_offline(False)
    assert_once_in_order(wait_received(harness, 8), range(1, 9))
    # Nothing trickled in while offline: when it was connected again, it still had 3.
    connection, at = harness.evaluate("[window.connection, window.receivedAt]")
    back = connection.index("connected", len(connection) - connection[::-1].index("offline"))
    assert at[back] == 3, (connection, at)
    publish(shop, channel, range(9, 10))
    assert_once_in_order(wait_received(harness, 9), range(1, 10))
    # And no late duplicates: a sentinel after them is the next to arrive.
    publish(shop, channel, range(10, 11))
    assert_once_in_order(wait_received(harness, 10), range(1, 11))
    # Recovered from history: onState only for the first subscribe.
    assert [s["recovered"] for s in harness.evaluate("window.states")] == [False]


def test_a_gap_longer_than_the_history_resyncs_with_on_state(
    context: BrowserContext, harness: Page, shop: LiveServer
) -> None:
    channel = "room:resync"
    start(harness, channel, shop.token("bob", channels=[channel]))
    publish(shop, channel, range(1, 3))
    wait_received(harness, 2)

    context.set_offline(True)
    harness.wait_for_function("window.connection.at(-1) === 'offline'")
    publish(shop, channel, range(3, 40))  # the node keeps 20 (TANDEM_HISTORY_SIZE)
    context.set_offline(False)

    harness.wait_for_function("window.states.length === 2", timeout=5_000)
    states = harness.evaluate("window.states")
    assert [s["recovered"] for s in states] == [False, False]
    assert states[1]["offset"] == states[0]["offset"] + 39
    publish(shop, channel, range(40, 41))
    messages = wait_received(harness, 3)
    # Nothing of the gap is replayed in part: the page resynced and goes on from the state.
    assert [m["n"] for m in messages] == [1, 2, 40], messages


def test_after_a_server_notice_the_helper_reconnects_and_resumes(
    harness: Page, shop: LiveServer
) -> None:
    """The server ends a session whose token expires (``server.notice`` then an "io server
    disconnect", which socket.io-client does not retry): the helper reconnects with a fresh
    token and re-subscribes from its position; publications around the gap arrive once."""
    channel = "room:notice"
    short = shop.token("bob", ttl=2, channels=[channel])
    fresh = shop.token("bob", channels=[channel])
    start(harness, channel, short, fresh)
    deadline = time.monotonic() + 3.5
    n = 0
    with shop.api() as api:
        while time.monotonic() < deadline:
            n += 1
            body = {"channel": channel, "event": "test.number", "data": {"n": n}}
            assert api.post("/api/publish", json=body).status_code in (200, 202)
            time.sleep(0.05)
    assert_once_in_order(wait_received(harness, n), range(1, n + 1))
    assert harness.evaluate("window.connection") == ["connected", "reconnecting", "connected"]
    assert harness.evaluate("window.states.length") == 1
