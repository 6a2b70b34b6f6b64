"""The demo's server side, without a browser: switches, the pay endpoint, shutdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from server.config import Settings
from server.demo.checkout import _checkout_html
from tests.support.live import LiveServer, live_server


@pytest.fixture(autouse=True)
def _no_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TANDEM_ENV", "TANDEM_DEMO", "TANDEM_API_KEYS", "TANDEM_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_the_demo_is_on_in_development_and_off_in_production_unless_set() -> None:
    production = {"env": "production", "jwt_secret": "x" * 40, "api_keys": "a-real-key"}
    assert Settings(_env_file=None).demo_enabled
    assert not Settings(_env_file=None, demo=False).demo_enabled
    assert not Settings(_env_file=None, **production).demo_enabled  # type: ignore[arg-type]
    assert Settings(_env_file=None, demo=True, **production).demo_enabled  # type: ignore[arg-type]


def test_the_page_inlines_its_config_and_picks_the_socket_io_build() -> None:
    json_page, msgpack_page = _checkout_html("json"), _checkout_html("msgpack")
    assert "/static/vendor/socket.io.min.js" in json_page
    assert "/static/vendor/socket.io.msgpack.min.js" in msgpack_page
    found = re.search(r'<script id="demo-config" type="application/json">(.*?)</script>', json_page)
    assert found is not None
    assert json.loads(found.group(1))["cart"]["total_cents"] == 7340


def test_pay_returns_the_job_and_a_token_that_reads_only_that_job(shop: LiveServer) -> None:
    with httpx.Client(base_url=shop.url, timeout=10) as http:
        first = http.post("/demo/checkout/pay").json()
        second = http.post("/demo/checkout/pay").json()
        job = first["job"]
        assert (job["owner"], job["kind"], job["status"]) == ("shopper", "checkout", "pending")
        auth = {"Authorization": f"Bearer {first['watch_token']}"}
        assert http.get(f"/api/jobs/{job['id']}", headers=auth).json()["id"] == job["id"]
        other = http.get(f"/api/jobs/{second['job']['id']}", headers=auth)
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "permission_denied"
        assert http.get("/demo/checkout/success").headers["content-type"].startswith("text/html")


def test_without_the_demo_its_routes_are_gone_and_the_static_files_stay(tmp: Path) -> None:
    with live_server(tmp, {"TANDEM_DEMO": "false"}) as node:
        with httpx.Client(base_url=node.url, timeout=10) as http:
            assert http.get("/demo/checkout").status_code == 404
            assert http.post("/demo/checkout/pay").status_code == 404
            assert http.get("/static/tandem.js").status_code == 200
            assert http.get("/static/nope.js").json()["error"]["code"] == "not_found"


def test_a_stopping_node_fails_the_checkouts_it_was_running(tmp: Path) -> None:
    """No page waits forever: a worker cancelled at shutdown marks its job ``interrupted``."""
    env = {"TANDEM_DEMO": "true", "TANDEM_DEMO_STEP_S": "10", "TANDEM_DEMO_FAILURE_RATE": "0"}
    with live_server(tmp, env) as node:
        job_id = httpx.post(f"{node.url}/demo/checkout/pay", timeout=10).json()["job"]["id"]
    with live_server(tmp, env) as node, node.api() as api:
        job = api.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "interrupted"
