"""The collaborative-documents benchmark (bench/docs.py) in a tiny configuration: Tandem and
Hocuspocus, a handful of editors, every scenario once.

Checks the shape of the JSON, that every editor ended with the same text and nothing was
lost; never the figures (the benchmark reports, it does not judge). Needs PostgreSQL, like
the storage tests, and redis-server or the shared Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.docs import DocsResult, summarize, tables
from tests.support.databases import admin_url
from tests.support.redis import redis_url

ROOT = Path(__file__).resolve().parents[2]


# About 25 s on an idle 2-core machine; the margin is for a busy one.
@pytest.mark.timeout(120)
def test_tiny_documents_run_of_both_servers_converges(tmp_path: Path) -> None:
    out = tmp_path / "docs.json"
    command = [
        *(sys.executable, "-m", "bench", "--quick", "--scenarios", "docs"),
        *("--docs-editors", "4", "--docs-seconds", "1", "--docs-workers", "1"),
        *("--docs-memory-docs", "10", "--docs-log-chars", "200"),
        *("--docs-compact-updates", "1000", "--out", str(out)),
    ]
    # The PostgreSQL and Redis the tests use (tests/support/fallback.py may have started them).
    env = {
        **os.environ,
        "TANDEM_BENCH_POSTGRES_URL": admin_url(),
        "TANDEM_BENCH_REDIS_URL": redis_url(),
    }
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["meta"]["docs_scenarios"] == ["docs-edit", "docs-memory", "docs-log"]
    results = {(r["server"], r["scenario"]): r for r in report["results"]}
    assert set(results) == {
        ("tandem2", "docs-edit"),
        ("hocuspocus2", "docs-edit"),
        ("tandem", "docs-memory"),
        ("hocuspocus", "docs-memory"),
        ("tandem", "docs-log"),
        ("hocuspocus", "docs-log"),
    }
    for key, result in results.items():
        assert result["errors"] == [], (key, result["errors"])
        [run] = result["runs"]
        assert run["loss"] == 0 and run["converged"] is True, (key, run)
        assert run["dropped"] == 0 and run["errors"] == {}, (key, run)
    for server in ("tandem2", "hocuspocus2"):
        edit = results[(server, "docs-edit")]["runs"][0]
        assert edit["editors"] == 4 and edit["sent"] > 0
        assert edit["delivered"] == edit["sent"] * 3
        assert edit["p50_ms"] is not None and edit["max_ms"] >= edit["p99_ms"] >= edit["p50_ms"]
        assert edit["cpu_us_per_update"] is not None
    for server in ("tandem", "hocuspocus"):
        memory = results[(server, "docs-memory")]["runs"][0]
        assert memory["documents"] == 10 and memory["connections"] == 20
        assert memory["kib_per_document"] is not None
        log = results[(server, "docs-log")]["runs"][0]
        assert log["chars"] == 200 and log["bytes_written"] > 0 and log["state_bytes"] > 0
    tandem_log = results[("tandem", "docs-log")]
    assert tandem_log["runs"][0]["log_rows"] == 200  # one row per typed character
    [compaction] = tandem_log["compaction"]
    assert compaction["updates"] == 1000 and compaction["text_length"] == 1000
    assert compaction["snapshot_bytes"] > 0 and compaction["compact_s"] > 0
    assert "| Tandem, 2 nodes + Redis | 4 |" in done.stdout
    assert "| Hocuspocus | 10 | 20 |" in done.stdout


def test_summary_and_table_show_the_median_and_the_range() -> None:
    result = DocsResult("tandem2", "docs-edit", "", 2)
    result.runs = [
        {"editors": 50, "p50_ms": 10.0, "loss": 0, "converged": True},
        {"editors": 50, "p50_ms": 30.0, "loss": 0, "converged": True},
        {"editors": 50, "p50_ms": 20.0, "loss": 0, "converged": True},
    ]
    result.summary = summarize(result.runs)
    assert result.summary["p50_ms"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert "converged" not in result.summary  # not a figure
    assert "| Tandem, 2 nodes + Redis | 50 (50–50) | - | - | 20.0 (10.0–30.0) |" in tables([result])
    assert not result.failed
    result.runs[1]["converged"] = False
    assert result.failed
