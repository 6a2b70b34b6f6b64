"""tandem.js status and typing helpers in a real browser: two pages, two users, one room."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.support.live import LiveServer, live_server

ROOM = "room:js-presence"
START = """([token, self, room]) => {
  window.seen = []; window.typers = [];
  window.tracker = Tandem.typingTracker((users) => (window.typers = users), { self });
  window.client = Tandem.connect("", { token });
  client.subscribe(room, (e) => { seen.push([e.type, e.data]); tracker.handle(e); }, {
    presence: true, onState: () => (window.ready = true),
  });
}"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("node"), {"TANDEM_TYPING_TIMEOUT_S": "1"}) as n:
        yield n


def open_page(context: BrowserContext, node: LiveServer, user: str) -> Page:
    page = context.new_page()
    page.goto(f"{node.url}/health/live")
    page.add_script_tag(url="/static/vendor/socket.io.min.js")
    page.add_script_tag(url="/static/tandem.js")
    page.evaluate(START, [node.token(user, name=user.title(), channels=[ROOM]), user, ROOM])
    page.wait_for_function("window.ready === true")
    return page


def wait_seen(page: Page, kind: str, predicate: str) -> None:
    page.wait_for_function(
        f"window.seen.some(([type, data]) => type === {kind!r} && ({predicate}))"
    )


def test_status_and_typing_between_two_pages(context: BrowserContext, node: LiveServer) -> None:
    alice = open_page(context, node, "alice")
    bob = open_page(context, node, "bob")
    try:
        wait_seen(alice, "presence.join", "data.user === 'bob' && data.status === 'online'")
        assert alice.evaluate("client.setStatus('busy')") == "busy"
        wait_seen(bob, "presence.update", "data.user === 'alice' && data.status === 'busy'")

        # Keystrokes: one typing:true however many keys, then typing:false on stop().
        keys = "(room) => { window.notifier = Tandem.typingNotifier(client, room); "
        keys += "notifier.input(); notifier.input(); }"
        alice.evaluate(keys, ROOM)
        bob.wait_for_function("window.typers.length === 1 && window.typers[0].user === 'alice'")
        alice.evaluate("notifier.stop()")
        bob.wait_for_function("window.typers.length === 0")
        starts = bob.evaluate("seen.filter(([t, d]) => t === 'presence.typing' && d.typing).length")
        assert starts == 1
        assert alice.evaluate("window.typers") == []  # its own typing is not shown

        # Not subscribed: the request is refused with the server's error.
        error = alice.evaluate("client.typing('room:elsewhere').catch((e) => e)")
        assert error["code"] == "bad_request"
    finally:
        for page in (alice, bob):
            page.evaluate("window.client.close()")
            page.close()
