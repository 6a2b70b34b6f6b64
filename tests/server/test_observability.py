"""What operators read: correlated log lines, and the dashboard and alerts over /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import socketio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live import API_KEY, ROOT, LiveServer, live_server

WITHIN = 10.0
DEPLOY = ROOT / "server" / "deploy"
# Labels Prometheus adds to every series it scrapes, and the histogram bucket label.
SCRAPE_LABELS = {"instance", "job", "le"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Production logs one JSON object per line, which the tests read back.
    env = {"TANDEM_ENV": "production", "TANDEM_LOG_LEVEL": "info"}
    with live_server(tmp_path_factory.mktemp("observability"), env) as server:
        yield server


def log_lines(node: LiveServer) -> list[dict[str, Any]]:
    lines = []
    for line in node.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def logged(node: LiveServer, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first log line that ``matches``, waiting for it to be written."""
    async with asyncio.timeout(WITHIN):
        while True:
            found = [line for line in log_lines(node) if matches(line)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def test_http_requests_carry_a_request_id_into_the_logs(node: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=WITHIN) as http:
        given = await http.get("/health/live", headers={"X-Request-ID": "checkout-7f3a.1"})
        made = await http.get("/health/live")
        forged = await http.get("/health/live", headers={"X-Request-ID": 'x" level=error'})
        refused = await http.post("/api/publish", json={}, headers={"X-Request-ID": "bad-key-1"})
    assert given.headers["X-Request-ID"] == "checkout-7f3a.1"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "bad-key-1"
    for request_id in ("checkout-7f3a.1", made.headers["X-Request-ID"], "bad-key-1"):

        def tagged(entry: dict[str, Any], rid: str = request_id) -> bool:
            return entry.get("request_id") == rid

        line = await logged(node, tagged)
        assert line["logger"] == "uvicorn.access", line


async def test_socket_log_lines_name_the_connection_and_the_user(node: LiveServer) -> None:
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(
            node.url,
            auth={"token": "not-a-token"},
            headers={"X-Request-ID": "login-attempt-1"},
            transports=["polling"],
            wait_timeout=WITHIN,
        )
    line = await logged(node, lambda e: e["message"].startswith("connection refused"))
    assert line["request_id"] == "login-attempt-1" and line["connection"], line
    assert "unauthorized" in line["message"]

    # A token that runs out: the server says so (server.notice), and logs it with who it was.
    client = socketio.AsyncClient(reconnection=False)
    notices: list[dict[str, Any]] = []
    noticed = asyncio.Event()

    def on_notice(notice: dict[str, Any]) -> None:
        notices.append(notice)
        noticed.set()

    client.on("server.notice", on_notice)
    await client.connect(node.url, auth={"token": node.token("dora", ttl=1)}, wait_timeout=WITHIN)
    sid = client.get_sid()
    try:
        line = await logged(node, lambda e: e["message"].startswith("disconnecting: token_expired"))
        await asyncio.wait_for(noticed.wait(), WITHIN)
    finally:
        await client.disconnect()
    assert line["connection"] == sid and line["user"] == "dora", line
    assert notices and notices[0]["code"] == "token_expired", notices


def exposed_families(node: LiveServer) -> dict[str, tuple[str, set[str]]]:
    """Metric sample name -> (family, label names seen), after some traffic."""
    with httpx.Client(base_url=node.url, timeout=WITHIN) as http:
        text = http.get("/metrics").text
    names: dict[str, tuple[str, set[str]]] = {}
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # the text format lists a counter's creation time as a gauge of its own
        labels = {label for sample in family.samples for label in sample.labels}
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = (family.name, labels)
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query of the dashboard and every alert rule."""
    found = []
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", target["expr"]))
    found.append(("variable instance", dashboard["templating"]["list"][1]["definition"]))
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in {"page", "ticket"}, rule
            assert rule["annotations"]["summary"], rule
            found.append((f"alert {rule['alert']}", rule["expr"]))
    return found


def test_the_dashboard_and_alerts_name_only_metrics_a_node_exposes(node: LiveServer) -> None:
    with httpx.Client(base_url=node.url, timeout=WITHIN) as http:
        published = http.post(
            "/api/publish",
            json={"channel": "room:metrics", "event": "metrics.tick", "data": {}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert published.status_code == 200, published.text
    exposed = exposed_families(node)
    queries = expressions()
    assert len(queries) > 25
    named = set()
    for where, expr in queries:
        for name in re.findall(r"\b((?:tandem|process)_[a-z0-9_]+)\b", expr):
            named.add(name)
            assert name in exposed, f"{where} names {name}, which /metrics does not expose"
        # Label matchers name labels the metric has (once it has series to show them).
        for name, matchers in re.findall(r"\b((?:tandem|process)_[a-z0-9_]+)\{([^}]*)\}", expr):
            family, labels = exposed[name]
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in labels | SCRAPE_LABELS or not labels, (where, family, label)
    # Every family of Tandem's own is on the dashboard.
    ours = {family for family, _ in exposed.values() if family.startswith("tandem_")}
    shown = {exposed[name][0] for name in named}
    assert ours <= shown, sorted(ours - shown)
