"""The checkout page's watcher on node A while the worker posts to node B (Redis + PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.support.cluster import shared_stores
from tests.support.live import LiveServer, live_server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp = tmp_path_factory.mktemp("two-nodes")
    with (
        shared_stores(tmp) as env,
        live_server(tmp / "a", env) as a,
        live_server(tmp / "b", env) as b,
    ):
        yield a, b


WATCH = """([jobId, token]) => {
  window.updates = [];
  Tandem.watchJob(jobId, token, {
    onUpdate: (job, via) => updates.push({version: job.version, status: job.status,
                                          progress: job.progress, via}),
  });
}"""


def test_page_on_a_sees_every_update_posted_to_b(
    page: Page, nodes: tuple[LiveServer, LiveServer]
) -> None:
    a, b = nodes
    with b.api() as worker:
        created = worker.post("/api/jobs", json={"owner": "shopper", "kind": "checkout"})
        assert created.status_code == 201, created.text
        job_id, token = created.json()["job"]["id"], created.json()["watch_token"]
        page.goto(f"{a.url}/health/live")  # a page of node A's origin
        page.add_script_tag(url="/static/vendor/socket.io.min.js")
        page.add_script_tag(url="/static/tandem.js")
        page.evaluate(WATCH, [job_id, token])
        page.wait_for_function("window.updates.length === 1", timeout=5_000)
        for progress in (20, 40, 60, 80):
            response = worker.post(f"/api/jobs/{job_id}/progress", json={"progress": progress})
            assert response.status_code == 200, response.text
        assert worker.post(f"/api/jobs/{job_id}/complete", json={"result": {"ok": 1}}).is_success
    page.wait_for_function("window.updates.at(-1).status === 'completed'", timeout=5_000)
    updates = page.evaluate("window.updates")
    versions = [u["version"] for u in updates]
    assert versions == sorted(set(versions)) and versions[-1] == 6, updates
    assert updates[-1]["progress"] == 100
    assert {u["via"] for u in updates[1:]} == {"socket"}, updates
