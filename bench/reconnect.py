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
as soon as it is ready. The clients come back (after ``retry_after_ms`` and jitter, then with
socket.io-client's backoff) and re-subscribe everything in one ``subscribe_many`` with
positions. Reported: each client's time to full recovery (every channel acked ``recovered:
true``) from the SIGTERM and from the new node being ready, p50/p99/max; and what must be zero:
subscriptions refused, channels not recovered, positions short of the last publication,
publications out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.histogram import rounded
from bench.loadgen import Worker, split
from bench.processes import NODE_DIR
from bench.procstat import cpu_seconds
from bench.targets import REDIS_URL
from tests.support.live import API_KEY, LiveServer, live_server, stop
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
    # The new node's /metrics: subscribe_many (batch) and subscribe (single) requests,
    # rate_limited answers.
    server_requests: dict[str, float] = field(default_factory=dict)
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


@contextlib.asynccontextmanager
async def _node(tmp: Path, prefix: str, port: int | None = None) -> AsyncIterator[LiveServer]:
    """A node (default limits) with its streams in Redis under ``prefix``, on ``port``."""
    env = {"TANDEM_BROKER_URL": f"{REDIS_URL}?prefix={prefix}"}
    # The blocking start and stop (a drain) in a thread: the workers' replies keep coming.
    node = live_server(tmp, env, startup_timeout=120, port=port)
    server = await asyncio.to_thread(node.__enter__)
    try:
        yield server
    finally:
        await asyncio.to_thread(node.__exit__, None, None, None)


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
    hard_timeout = 300 + n / 20 + options.recover_within_s
    workers: list[Worker] = []
    try:
        async with _node(tmp / "node", prefix) as node:
            for i in range(max(1, min(options.workers, n))):
                log = tmp / f"reconnect-{i}.log"
                workers.append(await Worker.start(log, hard_timeout, SCRIPT))
            await _hold(workers, node, options, result)
            await publish_all(node.url, options, 1)
            await _until(workers, lambda s: sum(x["received"] for x in s) >= n * k, 60)
            # The restart: SIGTERM by PID (the node drains), then a new process on its port.
            t0 = time.time()
            await asyncio.to_thread(stop, node, timeout=300)
            result.drain_s = round(time.time() - t0, 2)
        async with _node(tmp / "node", prefix, port=node.port) as node:
            ready = time.time()
            result.downtime_s = round(ready - t0, 2)
            cpu0 = cpu_seconds(node.pid)
            expected = await publish_all(node.url, options, 2)
            statuses = await _until(
                workers, lambda s: sum(x["recovered"] for x in s) >= n, options.recover_within_s
            )
            last = time.time()
            result.server_cpu_s = round(cpu_seconds(node.pid) - cpu0, 2)
            await asyncio.sleep(0.5)  # the last live publications
            reports = await asyncio.gather(
                *(w.call({"cmd": "report", "expected": expected}, 120) for w in workers)
            )
            result.server_requests = await asyncio.to_thread(node.subscribe_counts)
        _collect(result, reports, t0, ready)
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
        await delete_prefix(prefix, base=REDIS_URL)
    return result


async def _hold(
    workers: list[Worker], node: LiveServer, options: ReconnectOptions, result: ReconnectResult
) -> None:
    """Connect the clients, each subscribed to its channels."""
    n = options.clients
    token = node.token("bench", channels=["room:*"], ttl=86_400)
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
                    "channels": options.channels,
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
    _log(
        f"  reconnect: {result.connected}/{n} clients x {options.channels} channels in "
        f"{result.connect_s}s"
    )
    if result.connected < n:
        raise RuntimeError(f"only {result.connected} of {n} clients connected")


def _collect(
    result: ReconnectResult, reports: list[dict[str, Any]], t0: float, ready: float
) -> None:
    """The workers' reports, summed; recovery times from the SIGTERM and from ready."""
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
                r.server_requests.get("batch", 0), r.server_requests.get("single", 0)
            ),
        ]
        for r in results
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
