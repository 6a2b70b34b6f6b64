"""The departures board in a real browser while `tandem demo` feeds the node."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.redis import broker_url, delete_prefix, unique_prefix

FEED_S = 8


@pytest.fixture(scope="module")
def airport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("airport"), {"TANDEM_DEMO": "true"}) as node:
        yield node


def feed(node: LiveServer, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "server", "demo", "--url", node.url, "--api-key", API_KEY]
    options = ["--duration", str(FEED_S), "--flights", "12", "--speed", "20", "--tick", "0.25"]
    return subprocess.Popen(
        [*command, *options, *extra],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def trace(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.boardTrace")
    return result


def test_the_board_follows_flights_and_the_inbox_live(page: Page, airport: LiveServer) -> None:
    # No list refresh while the page is open: every flight must come live on airport:AMS.
    page.goto(f"{airport.url}/demo/board?user=grace&refresh=600000")
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.locator("#unread")).to_have_text("0")
    started = time.monotonic()
    process = feed(airport, "--seed", "7")
    try:
        # The rows appear from the list endpoint, then change through their channels.
        expect(page.locator("#flights tr")).to_have_count(12, timeout=FEED_S * 1000)
        page.wait_for_function(
            """() => window.boardTrace.flights.some(
                 (f) => f.type === "flight.updated" && f.changes.includes("status"))""",
            timeout=FEED_S * 1000,
        )
        page.wait_for_function("window.boardTrace.notifications.length > 0")
        expect(page.locator("#unread")).not_to_have_text("0")
        output, _ = process.communicate(timeout=FEED_S + 20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert process.returncode == 0, output
    assert "0 errors" in output, output
    assert time.monotonic() - started < FEED_S + 15  # it stops by itself
    seen = trace(page)
    assert {"flight.updated", "flight.position"} <= {f["type"] for f in seen["flights"]}
    for flight_id in {f["id"] for f in seen["flights"]}:
        versions = [f["version"] for f in seen["flights"] if f["id"] == flight_id]
        assert versions == sorted(set(versions)), (flight_id, versions)
    statuses = set(
        page.locator("#flights tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    )
    assert statuses - {"scheduled"}, statuses
    # Reading one notification lowers the count (over HTTP, back through the channel), from
    # the keyboard as well as with the mouse.
    unread = int(page.locator("#unread").inner_text())
    page.locator("#notifications li.unread").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#unread")).to_have_text(str(unread - 1))
    if unread > 1:
        page.locator("#notifications li.unread").first.click()
        expect(page.locator("#unread")).to_have_text(str(unread - 2))
    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#unread")).to_have_text("0")
    expect(page.locator("#notifications li.unread")).to_have_count(0)
    with httpx.Client(base_url=airport.url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        listed = api.get("/api/notifications", params={"user": "grace"}).json()
    assert listed["unread"] == 0 and listed["notifications"]
    # On a phone the page does not scroll sideways: the board stacks above the inbox.
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, overflow
    expect(page.locator("#flights tr").first).to_be_visible()
    inbox = page.locator("#inbox-title").bounding_box()
    assert inbox is not None and inbox["y"] < 844, inbox


def test_finished_flights_leave_the_board(page: Page, airport: LiveServer) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    base = {"date": soon[:10], "origin": "AMS", "destination": "OSL", "scheduled_departure": soon}
    flights = {"ZZ1-gone": "departed", "ZZ2-stays": "scheduled"}
    with httpx.Client(base_url=airport.url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        for flight, status in flights.items():
            body = {**base, "number": flight[:3], "status": status, "provider_ts": soon}
            assert api.put(f"/api/flights/{flight}", json=body).status_code == 200
    page.goto(f"{airport.url}/demo/board?user=ada&leave=1500")
    expect(page.locator("#flight-ZZ2-stays")).to_be_visible()
    page.wait_for_function("window.boardTrace.left.includes('ZZ1-gone')")
    expect(page.locator("#flight-ZZ1-gone")).to_have_count(0)
    # Two sweeps later (well past its own leave time), the scheduled flight is still there.
    sweeps = trace(page)["sweeps"]
    page.wait_for_function(f"window.boardTrace.sweeps >= {sweeps + 2}")
    expect(page.locator("#flight-ZZ2-stays")).to_be_visible()
    assert "ZZ2-stays" not in trace(page)["left"]


def test_board_sessions_are_for_demo_users_only(airport: LiveServer) -> None:
    with httpx.Client(base_url=airport.url, timeout=10) as http:
        session = http.post("/demo/board/session", json={"user": "ada"})
        assert session.status_code == 200 and session.json()["user"] == "ada"
        token = session.json()["token"]
        for body in ({"user": "mallory"}, {}, {"user": "ada", "admin": True}):
            refused = http.post("/demo/board/session", json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "invalid_payload"
        # The token reads flights and its own inbox, not someone else's.
        auth = {"Authorization": f"Bearer {token}"}
        assert http.get("/api/flights", headers=auth).status_code == 200
        other = http.get("/api/notifications", params={"user": "grace"}, headers=auth)
        assert other.status_code == 403


ALL_LIVE = """(n) => {
  const subs = window.boardTrace.subscriptions();
  return subs.length === n && subs.every((s) => s.live);
}"""


def test_a_board_of_61_flights_survives_a_node_restart_none_refused(
    page: Page, tmp_path: Path
) -> None:
    """The issue's board: 61 flight channels (and the airport's and the user's). After the node
    restarts they all come back in one subscribe_many, each recovered from its position."""
    prefix = unique_prefix()  # the streams outlive the node in Redis, as in production
    env = {"TANDEM_DEMO": "true", "TANDEM_BROKER_URL": broker_url(prefix)}
    soon = datetime.now(UTC) + timedelta(minutes=30)
    try:
        with live_server(tmp_path, env) as node:
            with httpx.Client(
                base_url=node.url, headers={"Authorization": f"Bearer {API_KEY}"}
            ) as api:
                for i in range(61):
                    departs = (soon + timedelta(minutes=i)).isoformat()
                    body = {
                        "date": departs[:10],
                        "origin": "AMS",
                        "destination": "OSL",
                        "scheduled_departure": departs,
                        "number": f"RS{i}",
                        "status": "scheduled",
                        "provider_ts": departs,
                    }
                    assert api.put(f"/api/flights/RS{i}-x", json=body).status_code == 200
            page.goto(f"{node.url}/demo/board?user=ada&refresh=600000")
            expect(page.locator("#flights tr")).to_have_count(61)
            page.wait_for_function(ALL_LIVE, arg=63)
            loaded = node.subscribe_counts()
            port = node.port
        # The old process is gone (SIGTERM: it told the page to come back); a new one starts
        # where the page reconnects.
        with live_server(tmp_path, env, port=port) as node:
            with httpx.Client(
                base_url=node.url, headers={"Authorization": f"Bearer {API_KEY}"}
            ) as api:
                body = {
                    "status": "boarding",
                    "gate": "D7",
                    "provider_ts": (soon + timedelta(hours=2)).isoformat(),
                }
                assert api.put("/api/flights/RS3-x", json=body).status_code == 200
            page.wait_for_function(ALL_LIVE, arg=63, timeout=20_000)
            expect(page.locator("#flight-RS3-x")).to_have_attribute("data-status", "boarding")
            subs = page.evaluate("window.boardTrace.subscriptions()")
            assert all(sub["recovered"] for sub in subs), subs
            restored = node.subscribe_counts()
        errors = page.evaluate("window.boardTrace.errors")
        assert "rate_limited" not in errors, errors
        # Loading the page: its first task's two channels and the list's 61 at once, in one
        # batch, or in two when the socket connected before the list came.
        assert loaded["batch"] in (1.0, 2.0), loaded
        assert (loaded["single"], loaded["rate_limited"]) == (0.0, 0.0), loaded
        assert restored == {"batch": 1.0, "single": 0.0, "rate_limited": 0.0}, restored
    finally:
        # A thread of its own: Playwright's loop counts as running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, delete_prefix(prefix)).result()
