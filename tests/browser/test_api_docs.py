"""The API docs (/docs) work without the internet: Swagger UI comes from /static."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.support.live import LiveServer, live_server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("docs")) as server:
        yield server


def test_swagger_ui_renders_the_api_from_local_assets(page: Page, node: LiveServer) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{node.url}/docs")
    expect(
        page.locator(".opblock-summary-path", has_text="/api/docs/{doc_id}").first
    ).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/publish").first).to_be_visible()
    assert requested and all(
        url.startswith(node.url) or url.startswith("data:") for url in requested
    )
