"""The admin console in a real browser, on node A of two nodes sharing Redis and PostgreSQL,
while a browser client is connected to node B."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, ViewportSize, expect

from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server, make_token

FAST = {
    "TANDEM_ADMIN_HEARTBEAT_S": "0.3",
    "TANDEM_ADMIN_STATS_INTERVAL_S": "0.5",
    "TANDEM_ADMIN_REQUEST_TIMEOUT_S": "2",
}
PHONE: ViewportSize = {"width": 390, "height": 844}
REGIONS = (
    "#nodes-section",
    "#connections-section",
    "#channels-section",
    "#revoke-section",
    "#slow-section",
    "#errors-section",
)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp = tmp_path_factory.mktemp("admin-console")
    with shared_stores(tmp) as env:
        env = {**env, **FAST}
        with live_server(tmp / "a", env) as a, live_server(tmp / "b", env) as b:
            yield a, b


CLIENT = """([token]) => {
  window.seen = {status: [], errors: []};
  window.client = Tandem.connect("", {
    token,
    onConnection: (status) => seen.status.push(status),
    onError: (error) => seen.errors.push(error.code),
  });
  const onError = (e) => seen.errors.push(e.code);
  client.subscribe("room:lobby", () => {}, {presence: true, onError});
  client.subscribe("job:not-mine", () => {}, {onError});
}"""


def connect_client(context: BrowserContext, node: LiveServer, user: str) -> Page:
    """A browser tab of node B's origin connected as ``user``, present on room:lobby."""
    tab = context.new_page()
    tab.goto(f"{node.url}/health/live")
    tab.add_script_tag(url="/static/vendor/socket.io.min.js")
    tab.add_script_tag(url="/static/tandem.js")
    token = make_token(user, channels=["room:*"], name="Grace Hopper")
    tab.evaluate(CLIENT, [token])
    tab.wait_for_function("window.seen.status.includes('connected')")
    return tab


def sign_in(page: Page, node: LiveServer, key: str) -> None:
    page.goto(f"{node.url}/admin")
    key_input = page.get_by_label("Admin API key")
    expect(key_input).to_be_focused()
    key_input.fill(key)
    key_input.press("Enter")  # from the keyboard


def test_a_bad_key_is_refused(page: Page, nodes: tuple[LiveServer, LiveServer]) -> None:
    a, _ = nodes
    sign_in(page, a, "not-the-key")
    expect(page.locator("#sign-in-error")).to_contain_text("refused")
    expect(page.locator("#console")).to_be_hidden()
    sign_in(page, a, make_token("mallory", scope="admin"))  # a user token is no admin key
    expect(page.locator("#sign-in-error")).to_contain_text("refused")
    expect(page.locator("#console")).to_be_hidden()


def test_console_shows_the_cluster_and_disconnects_a_user(
    page: Page, context: BrowserContext, nodes: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    a, b = nodes
    with a.api() as api:
        for n in range(3):
            body = {"channel": "room:lobby", "event": "chat.message", "data": {"n": n}}
            assert api.post("/api/publish", json=body).status_code == 200
    tab = connect_client(context, b, "grace")
    tab.wait_for_function("window.seen.errors.includes('permission_denied')")

    sign_in(page, a, API_KEY)
    expect(page.locator("#console")).to_be_visible()
    expect(page.locator("#nodes-title")).to_be_focused()
    expect(page.locator("#live")).to_have_text("Live")
    # Two nodes, both alive, with live numbers from admin:stats.
    expect(page.locator("#nodes tr")).to_have_count(2)
    expect(page.locator("#nodes .status-alive")).to_have_count(2)
    page.wait_for_function("() => window.adminTrace.snapshots >= 4")
    grace = page.locator('#connections tr[data-user="grace"]')
    expect(grace).to_have_count(1)
    expect(grace).to_contain_text("room:lobby")
    # The client's refused subscribe is among node B's recent errors, live.
    expect(page.locator("#errors")).to_contain_text("permission_denied")

    # A channel: its subscribers, history and presence.
    lobby = page.locator('#channels tr[data-channel="room:lobby"]')
    expect(lobby).to_contain_text("1")
    lobby.get_by_role("button", name="Open room:lobby").click()
    expect(page.locator("#channel-title")).to_have_text("room:lobby")
    # The three publications, and grace's presence.join.
    expect(page.locator("#history li", has_text="chat.message")).to_have_count(3)
    expect(page.locator("#history li", has_text="presence.join")).to_have_count(1)
    expect(page.locator("#presence")).to_contain_text("Grace Hopper (grace)")

    check_layout(page, tmp_path / "console-wide.png", 1100)
    page.set_viewport_size(PHONE)
    check_layout(page, tmp_path / "console-phone.png", PHONE["width"])
    # On a phone a connection is a card: its actions are on screen, not scrolled away.
    for name in ("Disconnect every connection of grace", "Disconnect connection"):
        box = grace.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], (name, box)

    # Disconnecting asks first: Escape cancels and changes nothing.
    disconnect = grace.get_by_role("button", name="Disconnect every connection of grace")
    disconnect.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Disconnect every connection of grace")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(grace).to_have_count(1)
    assert tab.evaluate("window.client.connected")

    disconnect.click()
    expect(page.locator("#confirm-ok")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_contain_text("Disconnected 1 connection(s) of grace")
    expect(grace).to_have_count(0)
    tab.wait_for_function("window.seen.status.at(-1) === 'closed'")
    assert "disconnected_by_admin" in tab.evaluate("window.seen.errors")


def check_layout(page: Page, path: Path, width: int) -> None:
    """Every region is shown, sized and within the viewport; nothing scrolls sideways."""
    page.screenshot(path=str(path), full_page=True)
    with path.open("rb") as image:
        header = image.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    shot_width, shot_height = struct.unpack(">II", header[16:24])
    assert shot_width == width and shot_height > 400
    for region in REGIONS:
        box = page.locator(region).bounding_box()
        assert box is not None, region
        assert box["width"] > min(width * 0.3, 300) and box["height"] > 40, (region, box)
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (region, box)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow}px of horizontal overflow at {width}px"


def test_console_unsubscribes_a_user_and_revokes_their_tokens(
    page: Page, context: BrowserContext, nodes: tuple[LiveServer, LiveServer]
) -> None:
    a, b = nodes
    tab = connect_client(context, b, "hedy")
    sign_in(page, a, API_KEY)
    hedy = page.locator('#connections tr[data-user="hedy"]')
    expect(hedy).to_contain_text("room:lobby")

    page.get_by_label("Channel name").fill("room:lobby")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.locator("#presence")).to_contain_text("(hedy)")
    page.get_by_label("Unsubscribe user").fill("hedy")
    page.get_by_role("button", name="Unsubscribe").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#result")).to_contain_text("Ended 1 subscription(s) of hedy to room:lobby")
    tab.wait_for_function("window.seen.errors.includes('unsubscribed_by_admin')")
    expect(hedy).not_to_contain_text("room:lobby")
    assert tab.evaluate("window.client.connected")

    page.get_by_label("User", exact=True).fill("hedy")
    page.get_by_role("button", name="Revoke tokens").click()
    expect(page.locator("#confirm-text")).to_contain_text("Revoke every token of hedy")
    page.locator("#confirm-ok").click()
    expect(page.locator("#result")).to_contain_text("Revoked tokens of hedy")
    expect(page.locator("#result")).to_contain_text("disconnected 1")
    expect(hedy).to_have_count(0)
    tab.wait_for_function("window.seen.status.at(-1) === 'closed'")
    assert "token_revoked" in tab.evaluate("window.seen.errors")
