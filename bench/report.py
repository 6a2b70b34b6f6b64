"""The results: a Markdown table on stdout, JSON, and a PNG of latency against offered load."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.scenarios import Result

SERVER_NAMES = {
    "tandem": "Tandem",
    "bare": "python-socketio",
    "node": "Node socket.io",
    "tandem2": "Tandem, 2 processes + Redis",
}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _latency(point: dict[str, Any] | None) -> str:
    if point is None:
        return "-"
    return "/".join(_num(point[k], 1) for k in ("p50_ms", "p99_ms", "max_ms"))


def _rate(saturation: dict[str, Any]) -> str:
    if not saturation:
        return "-"
    kept = "" if saturation["kept_up"] else "; never kept up"
    peak = _num(saturation["peak_deliveries_per_s"])
    return f"{_num(saturation['deliveries_per_s'])} (peak {peak}{kept})"


def _cores(saturation: dict[str, Any]) -> str:
    if not saturation:
        return "-"
    return f"{saturation['server_cores']:.2f}/{saturation['loadgen_cores']:.2f}"


def table(results: list[Result], fractions: list[float]) -> str:
    latency_headers = [f"p50/p99/max ms @{f:.0%}" for f in fractions]
    headers = [
        "scenario",
        "server",
        "clients",
        "deliveries/s at saturation (peak)",
        *latency_headers,
        "loss",
        "server CPU µs/delivery",
        "cores server/loadgen",
        "RSS KiB/idle conn",
    ]
    rows = []
    for r in results:
        by_fraction = {point["fraction"]: point for point in r.latency}
        sat = r.saturation or {}
        failed = " (failed)" if r.errors and r.saturation is None and r.scenario != "idle" else ""
        rows.append(
            [
                r.scenario,
                SERVER_NAMES.get(r.server, r.server) + failed,
                str(r.connected),
                _rate(sat),
                *(_latency(by_fraction.get(f)) for f in fractions),
                str(r.loss) if r.saturation else "-",
                _num(sat.get("cpu_us_per_delivery"), 1),
                _cores(sat),
                _num(r.rss_per_idle_conn_kib, 1),
            ]
        )
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class _AsJson(Protocol):
    def as_json(self) -> dict[str, Any]: ...


def write_json(path: Path, meta: dict[str, Any], results: Sequence[_AsJson]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"meta": meta, "results": [r.as_json() for r in results]}
    path.write_text(json.dumps(body, indent=2) + "\n")


def plot(path: Path, results: list[Result]) -> bool:
    """Latency (p50 dashed, p99 solid) against offered deliveries/s, one panel per scenario.
    Returns False when matplotlib is not installed (``pip install -e '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = [s for s in dict.fromkeys(r.scenario for r in results) if s != "idle"]
    if not scenarios:
        return False
    figure, axes = plt.subplots(
        1, len(scenarios), figsize=(5.5 * len(scenarios), 4.2), squeeze=False
    )
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        for r in (r for r in results if r.scenario == scenario):
            points = sorted(
                (s.offered_per_s, s.p50_ms, s.p99_ms) for s in r.steps if s.p99_ms is not None
            )
            if not points:
                continue
            x = [p[0] for p in points]
            name = SERVER_NAMES.get(r.server, r.server)
            (line,) = axis.plot(x, [p[2] for p in points], marker="o", label=f"{name} p99")
            axis.plot(x, [p[1] for p in points], ls="--", color=line.get_color(), alpha=0.6)
        axis.set_title(f"{scenario} (p99 solid, p50 dashed)")
        axis.set_xlabel("offered deliveries/s")
        axis.set_ylabel("publish-to-deliver latency, ms")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
