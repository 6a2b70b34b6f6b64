"""Reconnect storm: N clients holding K channels each, the node restarts, every one comes back.

Run with ``python -m bench --scenarios reconnect`` (``--reconnect-clients``,
``--reconnect-channels``, ``--reconnect-pool``; defaults 10,000 x 20 over 1,000 channels).

One Tandem node with its default limits (the per-connection request and subscription budgets
are what is measured against), its streams in Redis (TANDEM_BENCH_REDIS_URL, under a key prefix
of its own, deleted after) so that they outlive the process. Node workers (bench/node/
reconnect.js) connect the clients; each subscribes its K channels in one ``subscribe_many``.
One publication on every channel gives each client a position on each. Then the node is
restarted for real: SIGTERM by PID (it drains: ``server.notice shutdown``, reconnect after
``retry_after_ms``), a new process on the same port, and one more publication on every channel
as soon as it is ready. The clients come back as tandem.js does and re-subscribe everything in
one ``subscribe_many`` with positions. Reported: each client's time to full recovery (every
channel acked ``recovered: true``) from the SIGTERM and from the new node being ready, p50/p99/
max; and what must be zero: subscriptions refused, channels not recovered, positions short of
the last publication, publications out of order.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.histogram import rounded
from bench.loadgen import Worker, split
from bench.processes import NODE_DIR, die_with_parent, free_port, stop
from bench.procstat import cpu_seconds
from bench.targets import API_KEY, JWT_SECRET, REDIS_URL, tandem_token
from tests.support.redis import delete_prefix

SCRIPT = NODE_DIR / "reconnect.js"
SCENARIO = "reconnect"
PREFIX = "room:storm-"
EVENT = "bench.msg"
MAX_BATCH = 100  # publications per POST /api/publish/batch


@dataclass
class ReconnectOptions:
    clients: int = 10_000
    channels: int = 20  # per client: K consecutive channels of the pool, wrapping
    pool: int = 1_000  # distinct channels
    workers: int = 2  # Node processes holding the clients
    connect_concurrency: int = 50  # connection attempts in flight per worker, at the start
    recover_within_s: float = 120.0  # after the new node is ready, at most

    @classmethod
    def quick(cls) -> ReconnectOptions:
        return cls(clients=200, pool=100, workers=1)


@dataclass
class ReconnectResult:
    server: str
    scenario: str
    description: str
    clients: int
    channels: int
    pool: int
    connected: int = 0
    connect_s: float = 0.0
    drain_s: float | None = None  # SIGTERM to the old process's exit
    downtime_s: float | None = None  # SIGTERM to the new process answering /health/ready
    recovered: int = 0  # clients with every channel back, recovered
    recovery_ms: dict[str, float | None] = field(default_factory=dict)  # from the SIGTERM
    after_ready_ms: dict[str, float | None] = field(default_factory=dict)  # from ready
    refused: dict[str, int] = field(default_factory=dict)  # subscriptions, by error code
    # Connection attempts refused, by code: `shutdown` from the old node while it drains.
    connect_refused: dict[str, int] = field(default_factory=dict)
    unrecovered: int = 0
    missing: int = 0
    disorder: int = 0
    reconnects: int = 0
    server_cpu_s: float | None = None  # the new node, from ready to the last recovery
    server_requests: dict[str, float] = field(default_factory=dict)  # its /metrics
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def failed(self) -> bool:
        return bool(
            self.errors
            or self.refused
            or set(self.connect_refused) - {"shutdown"}
            or self.unrecovered
            or self.missing
            or self.disorder
            or self.recovered < self.clients
        )


def _log(message: str) -> None:
    print(message, flush=True)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": rounded(at(0.5)), "p99": rounded(at(0.99)), "max": rounded(values[-1])}


class Node:
    """One Tandem process on a fixed port, restartable there."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env.pop("PYTHONPATH", None)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "TANDEM_ENV": "development",
                "TANDEM_BROKER_URL": f"{REDIS_URL}?prefix={prefix}",
                "TANDEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'tandem.db'}",
                "TANDEM_JWT_SECRET": JWT_SECRET,
                "TANDEM_API_KEYS": API_KEY,
                "TANDEM_LOG_LEVEL": "warning",
                "TANDEM_DEMO": "false",
            }
        )
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        with (self.tmp / f"node-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=self.tmp,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def wait_ready(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the node was not ready within {within_s}s:\n{self.log_tail()}")

    def terminate(self, within_s: float = 60.0) -> None:
        """SIGTERM by PID and wait for the exit (the node drains its clients first)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(within_s)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def requests(self) -> dict[str, float]:
        """subscribe_many and subscribe requests admitted, rate_limited answers (/metrics)."""
        wanted = {
            'tandem_subscribe_requests_total{form="batch"}': "subscribe_many",
            'tandem_subscribe_requests_total{form="single"}': "subscribe",
            'tandem_request_errors_total{code="rate_limited"}': "rate_limited",
        }
        counts = dict.fromkeys(wanted.values(), 0.0)
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in wanted:
                counts[wanted[name]] = float(value)
        return counts

    def log_tail(self, lines: int = 20) -> str:
        text = (self.tmp / f"node-{self.starts}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


async def publish_all(url: str, options: ReconnectOptions, round_: int) -> dict[str, int]:
    """One publication on every channel of the pool; the offset each got."""
    names = [f"{PREFIX}{i}" for i in range(options.pool)]
    offsets: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for start in range(0, len(names), MAX_BATCH):
            chunk = names[start : start + MAX_BATCH]
            body = {"publications": [{"channel": n, "event": EVENT, "data": round_} for n in chunk]}
            response = await http.post("/api/publish/batch", json=body)
            response.raise_for_status()
            for name, result in zip(chunk, response.json()["results"], strict=True):
                offsets[name] = result["offset"]
    return offsets


async def _status(workers: list[Worker]) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(w.call({"cmd": "status"}) for w in workers)))


async def _until(workers: list[Worker], done: Any, within_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while True:
        statuses = await _status(workers)
        if done(statuses) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.1)


async def run_reconnect(options: ReconnectOptions, tmp: Path) -> ReconnectResult:
    k, n = options.channels, options.clients
    description = (
        f"{n} clients holding {k} channels each (of {options.pool}) reconnect after the node "
        "restarts"
    )
    result = ReconnectResult("tandem", SCENARIO, description, n, k, options.pool)
    prefix = f"tandem-bench-{secrets.token_hex(4)}:"
    node = Node(tmp / "node", prefix)
    hard_timeout = 300 + n / 20 + options.recover_within_s
    workers: list[Worker] = []
    try:
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(node.wait_ready)
        token = await asyncio.to_thread(tandem_token, node.env, node.tmp)
        for i in range(max(1, min(options.workers, n))):
            workers.append(await Worker.start(tmp / f"reconnect-{i}.log", hard_timeout, SCRIPT))
        began = time.monotonic()
        replies = await asyncio.gather(
            *(
                worker.call(
                    {
                        "cmd": "hold",
                        "url": node.url,
                        "token": token,
                        "start": start,
                        "count": count,
                        "channels": k,
                        "pool": options.pool,
                        "prefix": PREFIX,
                        "concurrency": options.connect_concurrency,
                    },
                    60 + n / 20,
                )
                for worker, (start, count) in zip(workers, split(n, len(workers)), strict=True)
            )
        )
        result.connect_s = round(time.monotonic() - began, 2)
        result.connected = sum(reply["ok"] for reply in replies)
        for reply in replies:
            result.errors.extend(f"connect: {c} x {e}" for e, c in reply["errors"].items())
        _log(f"  reconnect: {result.connected}/{n} clients x {k} channels in {result.connect_s}s")
        if result.connected < n:
            raise RuntimeError(f"only {result.connected} of {n} clients connected")
        await publish_all(node.url, options, 1)
        await _until(workers, lambda s: sum(x["received"] for x in s) >= n * k, 60)
        # The restart: by PID, and a new process on the same port.
        t0 = time.time()
        await asyncio.to_thread(node.terminate)
        result.drain_s = round(time.time() - t0, 2)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(node.wait_ready)
        ready = time.time()
        result.downtime_s = round(ready - t0, 2)
        cpu0 = node.cpu_seconds()
        expected = await publish_all(node.url, options, 2)
        statuses = await _until(
            workers,
            lambda s: sum(x["recovered"] for x in s) >= n,
            options.recover_within_s,
        )
        last = time.time()
        result.server_cpu_s = round(node.cpu_seconds() - cpu0, 2)
        await asyncio.sleep(0.5)  # the last live publications
        reports = await asyncio.gather(
            *(w.call({"cmd": "report", "expected": expected}, 120) for w in workers)
        )
        recovered_at = [t for r in reports for t in r["recovered"] if t is not None]
        result.recovered = len(recovered_at)
        result.recovery_ms = _quantiles([t - t0 * 1000 for t in recovered_at])
        result.after_ready_ms = _quantiles([t - ready * 1000 for t in recovered_at])
        for r in reports:
            for code, count in r["refused"].items():
                result.refused[code] = result.refused.get(code, 0) + count
            for code, count in r["connectRefused"].items():
                result.connect_refused[code] = result.connect_refused.get(code, 0) + count
            result.unrecovered += r["unrecovered"]
            result.missing += r["missing"]
            result.disorder += r["disorder"]
            result.reconnects += r["reconnects"]
        result.server_requests = await asyncio.to_thread(node.requests)
        if result.recovered < n:
            result.errors.append(
                f"{n - result.recovered} clients not recovered within "
                f"{options.recover_within_s}s of the restart ({round(last - ready, 1)}s); "
                f"connected {sum(s['connected'] for s in statuses)}"
            )
        _log(f"  {line(result)}")
    except Exception as exc:  # reported in the results
        result.errors.append(f"{type(exc).__name__}: {exc}")
        _log(f"  reconnect: failed: {exc}")
    finally:
        await asyncio.gather(*(w.close() for w in workers))
        await asyncio.to_thread(node.stop)
        await delete_prefix(prefix, base=REDIS_URL)
    return result


def _ms(q: dict[str, float | None]) -> str:
    return "/".join("-" if q.get(k) is None else f"{q[k]:,.0f}" for k in ("p50", "p99", "max"))


def line(r: ReconnectResult) -> str:
    return (
        f"recovered {r.recovered}/{r.clients} clients x {r.channels} channels; "
        f"full recovery p50/p99/max {_ms(r.recovery_ms)} ms after SIGTERM "
        f"({_ms(r.after_ready_ms)} ms after the new node was ready, {r.downtime_s}s down); "
        f"subscriptions refused {sum(r.refused.values())}, not recovered {r.unrecovered}, "
        f"missing {r.missing}, out of order {r.disorder}; connections refused "
        f"{r.connect_refused or 0} (`shutdown`: the old node, draining)"
    )


def table(results: list[ReconnectResult]) -> str:
    headers = [
        "reconnect",
        "clients x channels",
        "node down s",
        "full recovery p50/p99/max ms (from SIGTERM)",
        "from ready",
        "subscriptions refused",
        "not recovered",
        "missing",
        "server CPU s",
        "subscribe_many / subscribe",
    ]
    rows = [
        [
            "Tandem + Redis",
            f"{r.recovered}/{r.clients} x {r.channels}",
            str(r.downtime_s),
            _ms(r.recovery_ms),
            _ms(r.after_ready_ms),
            str(sum(r.refused.values())),
            str(r.unrecovered),
            str(r.missing),
            str(r.server_cpu_s),
            "{:,.0f} / {:,.0f}".format(
                r.server_requests.get("subscribe_many", 0), r.server_requests.get("subscribe", 0)
            ),
        ]
        for r in results
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
