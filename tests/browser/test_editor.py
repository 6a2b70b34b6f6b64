"""The collaborative editor (/demo/editor/<doc>) in headless Chromium, with the Python SDK
editing the same document: convergence, cursors, presence, offline edits, viewers, and two
nodes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from pycrdt import Text

from client_sdk import Client, LiveDoc
from tests.browser.conftest import TIMEOUT_MS
from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server

T = TypeVar("T")
CONTENT = "editorApp.ydoc.getText('content').toString()"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("editor")) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp = tmp_path_factory.mktemp("editor-two-nodes")
    with (
        shared_stores(tmp) as env,
        live_server(tmp / "a", env) as a,
        live_server(tmp / "b", env) as b,
    ):
        yield a, b


class SdkEditor:
    """The Python SDK editing a document from a thread of its own (Playwright's sync API
    keeps this one's event loop busy)."""

    def __init__(self, url: str, token: str, doc: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = Client(url, token=token, reconnect_delay=0.2, reconnect_delay_max=1)
        self._doc_cm: Any = None
        self.doc: LiveDoc = self.run(self._open(doc))

    async def _open(self, doc: str) -> LiveDoc:
        await self._client.connect()
        self._doc_cm = self._client.docs.open(
            doc, awareness={"user": {"id": "robot", "name": "Robot", "color": "#333"}}
        )
        live: LiveDoc = await self._doc_cm.__aenter__()
        return live

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def insert(self, index: int, value: str) -> None:
        async def edit() -> None:
            self.doc.text.insert(index, value)

        self.run(edit())

    @property
    def text(self) -> str:
        async def read() -> str:
            return str(self.doc.get("content", type=Text))

        return self.run(read())

    def wait_text(self, expected: str, timeout: float = 10) -> None:
        self.run(self.doc.wait_for(lambda d: str(d.text) == expected, timeout=timeout), timeout + 1)

    def close(self) -> None:
        async def stop() -> None:
            await self._doc_cm.__aexit__(None, None, None)
            await self._client.close()

        try:
            self.run(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


def open_editor(
    browser: Browser, url: str, doc: str, name: str, *, view: bool = False
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{url}/demo/editor/{doc}?name={name}" + ("&view=1" if view else ""))
    expect(page.locator("#sync-status")).to_have_text("synced")
    page.errors = errors  # type: ignore[attr-defined]
    return context, page


def type_at_end(page: Page, text: str) -> None:
    page.click("#editor .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def server_content(node: LiveServer, doc: str) -> str:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.get(f"{node.url}/api/docs/{doc}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    text: str = response.json()["content"]
    return text


def converged(pages: list[Page], sdk: SdkEditor, node: LiveServer, doc: str) -> str:
    """Every copy holds the same text (bounded wait); returns it."""
    deadline = time.monotonic() + 10
    while True:
        texts = {page.evaluate(CONTENT) for page in pages} | {sdk.text}
        if len(texts) == 1 and texts == {server_content(node, doc)}:
            return texts.pop()
        assert time.monotonic() < deadline, f"not converged: {texts}"
        time.sleep(0.05)


def test_two_browsers_and_the_sdk_edit_together(browser: Browser, node: LiveServer) -> None:
    doc = "together"
    sdk = SdkEditor(node.url, node.token("robot", name="Robot", docs={doc: "editor"}), doc)
    ann_context, ann = open_editor(browser, node.url, doc, "Ann")
    bob_context, bob = open_editor(browser, node.url, doc, "Bob")
    try:
        # Concurrent: both pages type while the SDK inserts at the start.
        type_at_end(ann, "Ann was here. ")
        sdk.insert(0, "[robot] ")
        type_at_end(bob, "Bob too. ")
        text = converged([ann, bob], sdk, node, doc)
        assert all(part in text for part in ("Ann was here. ", "Bob too. ", "[robot] "))
        # Each sees the others: names in the presence list, remote carets labelled.
        for page, others in ((ann, ("Bob", "Robot")), (bob, ("Ann", "Robot"))):
            for other in others:
                expect(page.locator(f'#presence li[data-name="{other}"]')).to_have_count(1)
        expect(bob.locator(".cm-ySelectionInfo", has_text="Ann")).to_be_visible()
        expect(ann.locator(".cm-ySelectionInfo", has_text="Bob")).to_be_visible()
        # Typing shows while Ann types and goes after she stops.
        type_at_end(ann, "x")
        expect(bob.locator('#presence li[data-name="Ann"]')).to_have_attribute(
            "data-typing", "true"
        )
        expect(bob.locator('#presence li[data-name="Ann"]')).to_have_attribute(
            "data-typing", "false", timeout=5000
        )
        # A closed tab: its cursor and presence are gone within a second.
        bob_context.close()
        started = time.monotonic()
        expect(ann.locator('#presence li[data-name="Bob"]')).to_have_count(0, timeout=1000)
        expect(ann.locator(".cm-ySelectionInfo", has_text="Bob")).to_have_count(0, timeout=1000)
        assert time.monotonic() - started < 1.0
        robot_sees = sdk.run(_names(sdk.doc))
        assert "Bob" not in robot_sees and "Ann" in robot_sees
        assert ann.errors == []  # type: ignore[attr-defined]
    finally:
        ann_context.close()
        sdk.close()


async def _names(doc: LiveDoc) -> set[str]:
    return {
        (state or {}).get("user", {}).get("name")
        for client, state in doc.awareness.states.items()
        if client != doc.client_id
    }


def test_offline_edits_merge_and_viewers_cannot_edit(browser: Browser, node: LiveServer) -> None:
    doc = "offline"
    sdk = SdkEditor(node.url, node.token("robot", docs={doc: "editor"}), doc)
    ann_context, ann = open_editor(browser, node.url, doc, "Ann")
    vic_context, vic = open_editor(browser, node.url, doc, "Vic", view=True)
    try:
        expect(vic.locator("#role")).to_contain_text("viewer")
        expect(vic.locator("#readonly-banner")).to_be_visible()
        type_at_end(ann, "online. ")
        converged([ann, vic], sdk, node, doc)
        ann_context.set_offline(True)
        expect(ann.locator("#connection-banner")).to_be_visible()
        type_at_end(ann, "written offline. ")
        sdk.insert(0, "meanwhile: ")
        ann_context.set_offline(False)
        expect(ann.locator("#connection-banner")).to_be_hidden(timeout=15_000)
        expect(ann.locator("#sync-status")).to_have_text("synced", timeout=15_000)
        text = converged([ann, vic], sdk, node, doc)
        assert text == "meanwhile: online. written offline. "
        # The viewer's keystrokes change nothing anywhere.
        vic.click("#editor .cm-content")
        vic.keyboard.type("vandalism")
        # The keystrokes were handled by the time type() returned: the viewer's own copy,
        # the only one that could have sent them, did not change.
        assert vic.evaluate(CONTENT) == text
        assert "vandalism" not in converged([ann], sdk, node, doc)
    finally:
        ann_context.close()
        vic_context.close()
        sdk.close()


def test_editors_on_two_nodes_converge(
    browser: Browser, nodes: tuple[LiveServer, LiveServer]
) -> None:
    a, b = nodes
    doc = "two-nodes"
    sdk = SdkEditor(b.url, b.token("robot", name="Robot", docs={doc: "editor"}), doc)
    ann_context, ann = open_editor(browser, a.url, doc, "Ann")
    bob_context, bob = open_editor(browser, b.url, doc, "Bob")
    try:
        for i in range(3):
            type_at_end(ann, f"a{i} ")
            type_at_end(bob, f"b{i} ")
            sdk.insert(0, f"r{i} ")
        text = converged([ann, bob], sdk, a, doc)
        assert all(f"{who}{i} " in text for who in "abr" for i in range(3))
        assert server_content(b, doc) == text
        expect(ann.locator('#presence li[data-name="Bob"]')).to_have_count(1)
        expect(ann.locator(".cm-ySelectionInfo", has_text="Bob")).to_be_visible()
        bob_context.close()
        expect(ann.locator('#presence li[data-name="Bob"]')).to_have_count(0, timeout=1000)
    finally:
        ann_context.close()
        sdk.close()
