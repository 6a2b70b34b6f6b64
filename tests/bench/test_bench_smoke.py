"""The benchmark harness (bench/) in a tiny configuration: every server, a few dozen clients.

Checks the shape of the JSON and that nothing was lost; never the figures (the benchmark
reports, it does not judge: a slow machine must not fail the suite).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.histogram import Histogram
from bench.loadgen import split
from bench.reconnect import ReconnectResult, table as reconnect_table

ROOT = Path(__file__).resolve().parents[2]

RESULT_KEYS = {
    "server",
    "scenario",
    "clients",
    "connected",
    "rss_per_idle_conn_kib",
    "saturation",
    "latency",
    "loss",
    "disorder",
    "dropped",
    "steps",
    "errors",
}
SATURATION_KEYS = {
    "deliveries_per_s",
    "offered_per_s",
    "cpu_us_per_delivery",
    "server_cores",
    "kept_up",
    "peak_deliveries_per_s",
}
LATENCY_KEYS = {"fraction", "offered_per_s", "delivered_per_s", "p50_ms", "p99_ms", "max_ms"}


# About 60 s on an idle 2-core machine; the margin is for a busy one.
@pytest.mark.timeout(240)
def test_tiny_run_of_every_server_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    command = [
        *(sys.executable, "-m", "bench", "--quick", "--clients", "30"),
        *("--servers", "tandem,tandem2,bare,node", "--scenarios", "fanout1k,o2o,o2o-batch"),
        *(
            "--duration",
            "0.5",
            "--max-steps",
            "2",
            "--refine-steps",
            "1",
            "--fractions",
            "0.5",
            "--workers",
            "1",
        ),
        *("--start-rate", "300", "--out", str(out)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["meta"]["note"].startswith("The load generator")
    results = {(r["server"], r["scenario"]): r for r in report["results"]}
    assert set(results) == {
        (server, scenario)
        for server in ("tandem", "tandem2", "bare", "node")
        for scenario in ("fanout1k", "o2o", "o2o-batch")
    }
    for (server, scenario), result in results.items():
        assert RESULT_KEYS <= set(result), (server, scenario)
        assert result["errors"] == [], (server, scenario, result["errors"])
        assert result["connected"] == 30
        assert result["rss_per_idle_conn_kib"] is not None
        assert result["loss"] == 0, (server, scenario, result["steps"])
        assert result["disorder"] == 0 and result["dropped"] == 0
        assert SATURATION_KEYS <= set(result["saturation"])
        assert result["saturation"]["deliveries_per_s"] > 0
        [point] = result["latency"]
        assert LATENCY_KEYS <= set(point) and point["fraction"] == 0.5
        assert point["p99_ms"] is not None and point["max_ms"] >= point["p50_ms"]
    assert "| fanout1k | Tandem | 30 |" in done.stdout
    assert out.with_suffix(".png").stat().st_size > 0


def test_histogram_quantiles_are_within_a_percent() -> None:
    histogram = Histogram()
    # Buckets as the Node workers compute them: floor(ln(us) / ln(1.01)).
    samples_us = [1000 * (i + 1) for i in range(100)]  # 1..100 ms
    buckets: dict[int, int] = {}
    for us in samples_us:
        bucket = math.floor(math.log(us) / math.log(1.01))
        buckets[bucket] = buckets.get(bucket, 0) + 1
    histogram.add([[b, c] for b, c in buckets.items()], max(samples_us))
    assert histogram.count == 100
    assert histogram.quantile_ms(0.5) == pytest.approx(50, rel=0.02)
    assert histogram.quantile_ms(0.99) == pytest.approx(99, rel=0.02)
    assert histogram.max_ms == 100


def test_split_covers_every_client_once() -> None:
    assert split(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert sum(n for _, n in split(2000, 2)) == 2000


def test_reconnect_storm_fails_on_anything_refused_or_lost_but_a_draining_node() -> None:
    """The reconnect scenario (bench/reconnect.py; a run takes ~20 s even tiny: two node
    starts and a drain, so none here): what counts as a failure, and its table."""
    done = ReconnectResult("tandem", "reconnect", "", clients=2, channels=3, pool=3, recovered=2)
    done.recovery_ms = {"p50": 900.0, "p99": 1200.0, "max": 1250.0}
    done.connect_refused = {"shutdown": 5}  # the old node while it drains: expected
    assert not done.failed
    assert "| Tandem + Redis | 2/2 x 3 |" in reconnect_table([done])
    assert "900/1,200/1,250" in reconnect_table([done])
    for bad in (
        {"refused": {"rate_limited": 1}},
        {"connect_refused": {"unauthorized": 1}},
        {"unrecovered": 1},
        {"missing": 1},
        {"disorder": 1},
        {"recovered": 1},
    ):
        assert dataclasses.replace(done, **bad).failed, bad
