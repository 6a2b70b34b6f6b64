"""The checkout-at-scale (bench/checkout.py) and idle-CPU (bench/idle_cpu.py) benchmarks, tiny.

Checks the shape of the JSON, that no page missed an update, that the slow pages coalesced but
ended on their job's final update, and that every idle connection stayed; never the figures
(the benchmark reports, it does not judge: a slow machine must not fail the suite). Each run is
about 7 s on a quiet 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_tiny_checkout_run_loses_nothing_and_coalesces_for_slow_pages(tmp_path: Path) -> None:
    out = tmp_path / "checkout.json"
    command = [
        *(sys.executable, "-m", "bench.checkout", "--pages", "30", "--rate", "150"),
        *("--seconds", "2", "--workers", "2", "--slow", "2", "--out", str(out)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["steps_per_job"] == 10
    assert result["posted"] == result["accepted"] == 300
    assert result["unsent"] == 0 and result["post_failures"] == {}
    assert result["final_missing"] == result["intermediate_missing"] == 0
    assert result["dropped_pages"] == 0 and result["errors"] == []
    # Each slow page stopped reading before the first update: it got fewer, the last included.
    assert result["slow_pages"] == result["slow_coalesced_pages"] == 2
    assert result["slow_received"] < result["slow_expected"] == 20
    assert result["p99_ms"] is not None and result["max_ms"] >= result["p50_ms"]
    assert "checkout: 30 pages (2 slow)" in done.stdout


@pytest.mark.timeout(90)
def test_tiny_idle_cpu_run_keeps_every_connection(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    command = [
        *(sys.executable, "-m", "bench.idle_cpu", "--connections", "100"),
        *("--ping-interval", "0.5", "--window", "1", "--workers", "1", "--out", str(out)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["connected"] == 100 and result["dropped"] == 0 and result["errors"] == []
    assert result["pings"] == 200
    assert result["us_per_ping"] is not None and result["cores_per_10k_at_default"] is not None
    assert "idle: 100/100 connections" in done.stdout


def test_bad_sizes_are_refused() -> None:
    from bench import checkout, idle_cpu

    with pytest.raises(SystemExit):
        checkout.parse(["--pages", "0"])
    with pytest.raises(SystemExit):
        checkout.parse(["--pages", "3", "--slow", "4"])
    with pytest.raises(SystemExit):
        idle_cpu.parse(["--ping-interval", "5", "--window", "9"])
