"""The checkout demo in a real browser: pay, watch the job, land on the receipt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import DEMO
from tests.support.live import LiveServer, live_server

TERMINAL = {"completed", "failed", "cancelled"}


def open_checkout(page: Page, server: LiveServer) -> None:
    page.goto(f"{server.url}/demo/checkout")
    expect(page.get_by_role("button", name="Pay")).to_be_enabled()


def trace(page: Page) -> list[dict[str, Any]]:
    """Every job snapshot the page rendered: {version, status, progress, via}."""
    result: list[dict[str, Any]] = page.evaluate("window.checkoutTrace")
    return result


def test_pay_shows_progress_and_lands_on_the_receipt(
    page: Page, shop: LiveServer, tmp_path: Path
) -> None:
    open_checkout(page, shop)
    expect(page.locator("#total")).to_have_text("€73.40")
    page.get_by_role("button", name="Pay").click()

    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#percent")).to_have_text("100 %")
    expect(page.locator("#outcome")).to_contain_text("Payment confirmed")
    expect(page.locator("#stage")).to_have_text("Done")
    seen = trace(page)
    assert [u["version"] for u in seen] == sorted({u["version"] for u in seen}), seen
    progress = [u["progress"] for u in seen]
    assert progress == sorted(progress), seen
    assert {"processing", "completed"} <= {u["status"] for u in seen}
    assert "socket" in {u["via"] for u in seen}, seen

    page.wait_for_url("**/demo/checkout/success?job=*")
    receipt = page.locator("#receipt")
    expect(receipt).to_contain_text("Thank you for your order!")
    expect(receipt).to_contain_text("Tandem enamel mug")
    expect(receipt).to_contain_text("€73.40")
    expect(receipt).to_contain_text("Visa •••• 4242")
    page.screenshot(path=tmp_path / "success.png", full_page=True)


def test_a_declined_card_shows_the_failure_and_lets_the_shopper_retry(
    page: Page, declining_shop: LiveServer
) -> None:
    open_checkout(page, declining_shop)
    page.get_by_role("button", name="Pay").click()

    outcome = page.locator("#outcome")
    expect(outcome).to_contain_text("Payment failed.")
    expect(outcome).to_contain_text("Your card was declined")
    assert page.url.endswith("/demo/checkout")
    with declining_shop.api() as api:
        job = api.get(f"/api/jobs/{page.evaluate('document.body.dataset.job')}").json()
    assert job["error"]["code"] == "card_declined"

    page.get_by_role("button", name="Try again").click()
    expect(outcome).to_be_hidden()
    expect(page.get_by_role("button", name="Pay")).to_be_enabled()


def test_a_page_that_was_offline_shows_the_final_state_within_5_s(
    context: BrowserContext, page: Page, shop: LiveServer
) -> None:
    open_checkout(page, shop)
    page.get_by_role("button", name="Pay").click()
    page.wait_for_function("window.checkoutTrace.some(u => u.status === 'processing')")
    job_id = page.evaluate("document.body.dataset.job")

    context.set_offline(True)
    expect(page.locator("#connection")).to_contain_text("Offline")
    final = wait_until_finished(shop, job_id)
    assert final["status"] == "completed"
    assert not {u["status"] for u in trace(page)} & TERMINAL, "the page saw the end while offline"

    context.set_offline(False)
    expect(page.locator("#outcome")).to_contain_text("Payment confirmed", timeout=5_000)
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    last = trace(page)[-1]
    assert (last["version"], last["status"]) == (final["version"], "completed")
    page.wait_for_url("**/demo/checkout/success?job=*")
    expect(page.locator("#receipt")).to_contain_text("Thank you for your order!")


@pytest.fixture(scope="module")
def msgpack_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {**DEMO, "TANDEM_DEMO_FAILURE_RATE": "0", "TANDEM_SERIALIZER": "msgpack"}
    with live_server(tmp_path_factory.mktemp("msgpack-shop"), env) as node:
        yield node


def test_the_page_speaks_msgpack_to_a_msgpack_node(page: Page, msgpack_shop: LiveServer) -> None:
    scripts = []
    page.on("request", lambda request: scripts.append(request.url))
    open_checkout(page, msgpack_shop)
    assert any(url.endswith("/vendor/socket.io.msgpack.min.js") for url in scripts), scripts
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#outcome")).to_contain_text("Payment confirmed")
    assert "socket" in {u["via"] for u in trace(page)}


def wait_until_finished(server: LiveServer, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with server.api() as api:
        while True:
            job: dict[str, Any] = api.get(f"/api/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s"
            time.sleep(0.1)
