"""One scenario against one server: connect the clients, ramp the publish rate, measure.

Per step: the publisher worker publishes open-loop at a rate for a duration; the subscriber
workers count deliveries and record latency; the step ends when everything expected arrived
(acked publications x recipients) or the drain gave up; what never arrived is lost. Server CPU
is utime+stime from /proc over the step, publishing and draining; deliveries/s is received /
(last delivery - first publication), or over the publishing window when that is longer.
Latency includes the load generator's own time to read a burst: a fan-out publication reaches
every subscriber at once, and each worker reads its share of them one after the other.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.histogram import Histogram, rounded
from bench.loadgen import Worker, split
from bench.options import Options, Scenario
from bench.procstat import cpu_seconds, rss_bytes
from bench.targets import Target, started

EVENT = "bench.msg"
FANOUT_CHANNEL = "room:bench"
O2O_PREFIX = "room:o2o-"
# Makes the publication's data about 200 bytes of JSON ({s, t, k, pad}).
PAD = "x" * 150
WARMUP_STEP = 999


@dataclass
class Step:
    label: str  # "ramp", "refine" or "25%", "50%", ...
    offered_per_s: float  # deliveries/s asked of the server
    publications_per_s: float
    seconds: float
    sent: int = 0
    acked: int = 0
    expected: int = 0
    received: int = 0
    loss: int = 0
    delivered_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_s: float = 0.0
    cpu_us_per_delivery: float | None = None
    server_cores: float = 0.0
    loadgen_cores: float = 0.0
    publish_errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Result:
    server: str
    scenario: str
    description: str
    clients: int
    connected: int = 0
    connect_s: float = 0.0
    rss_before_mib: float | None = None
    rss_idle_mib: float | None = None
    rss_per_idle_conn_kib: float | None = None
    saturation: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    loss: int = 0
    disorder: int = 0
    dropped: int = 0
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Run:
    """The processes of one scenario against one server."""

    def __init__(self, target: Target, scenario: Scenario, options: Options, tmp: Path) -> None:
        self.target = target
        self.scenario = scenario
        self.options = options
        self.tmp = tmp
        self.subscribers: list[Worker] = []
        self.publisher: Worker | None = None
        self.recipients = 0  # deliveries per publication

    @property
    def workers(self) -> list[Worker]:
        return self.subscribers + ([self.publisher] if self.publisher else [])

    def _subscribe_command(self, start: int, count: int, url: str) -> dict[str, Any]:
        command: dict[str, Any] = {
            "cmd": "subscribe",
            "url": url,
            "token": self.target.token,
            "count": count,
            "concurrency": self.options.connect_concurrency,
            "deflate": self.options.deflate,
            "client": self.options.client,
        }
        if self.scenario.kind == "o2o":
            command.update(prefix=O2O_PREFIX, start=start)
        else:
            command.update(channel=FANOUT_CHANNEL)
        return command

    async def connect(self, result: Result, hard_timeout_s: float) -> None:
        clients = self.scenario.clients
        # At least one subscriber worker per server process, each on its own process.
        urls = self.target.urls
        count = max(len(urls), min(self.options.workers, clients))
        for i in range(count):  # one by one, so that close() stops those that started
            self.subscribers.append(
                await Worker.start(self.tmp / f"loadgen-{i}.log", hard_timeout_s)
            )
        began = time.monotonic()
        timeout = 60 + clients / 50
        replies = await asyncio.gather(
            *(
                worker.call(self._subscribe_command(start, n, urls[i % len(urls)]), timeout)
                for i, (worker, (start, n)) in enumerate(
                    zip(self.subscribers, split(clients, count), strict=True)
                )
            )
        )
        result.connect_s = round(time.monotonic() - began, 2)
        result.connected = sum(reply["ok"] for reply in replies)
        for reply in replies:
            result.errors.extend(f"connect: {n} x {e}" for e, n in reply["errors"].items())
        self.recipients = result.connected if self.scenario.kind == "fanout" else 1

    async def open_publisher(self, hard_timeout_s: float) -> None:
        self.publisher = await Worker.start(self.tmp / "publisher.log", hard_timeout_s)
        options = self.options
        http = self.scenario.publish != "socket"
        publishers = options.http_connections if http else options.publishers
        await self.publisher.call(
            {
                "cmd": "publishers",
                "urls": self.target.urls,
                "token": self.target.token,
                "apiKey": self.target.api_key,
                "count": publishers,
                "mode": self.scenario.publish,
                "deflate": self.options.deflate,
            }
        )

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self.workers))

    async def step(
        self, index: int, label: str, offered: float, seconds: float | None = None
    ) -> Step:
        options, publisher = self.options, self.publisher
        assert publisher is not None
        rate = offered / self.recipients
        if seconds is None:
            # Slow rates (wide fan-out) run longer, to publish a few times at least.
            longer = max(options.duration, options.min_publications / rate)
            seconds = min(longer, 4 * options.duration)
        step = Step(label, round(offered, 1), round(rate, 3), round(seconds, 2))
        server_cpu0, loadgen_cpu0 = self._server_cpu(), self._loadgen_cpu()
        began = time.monotonic()
        run: dict[str, Any] = {
            "cmd": "run",
            "step": index,
            "rate": rate,
            "duration": seconds,
            "pad": PAD,
            "maxInflight": 2000,
        }
        if self.scenario.kind == "o2o":
            run.update(prefix=O2O_PREFIX, start=0, count=self.scenario.clients)
        else:
            run.update(channel=FANOUT_CHANNEL, count=1)
        ran = await publisher.call(run, seconds + 60)
        step.sent, step.acked, step.publish_errors = ran["sent"], ran["acked"], ran["errors"]
        step.expected = step.acked * self.recipients
        await self._drain(index, step.expected)
        wall = time.monotonic() - began
        step.server_cpu_s = round(self._server_cpu() - server_cpu0, 3)
        step.server_cores = round(step.server_cpu_s / wall, 2)
        step.loadgen_cores = round((self._loadgen_cpu() - loadgen_cpu0) / wall, 2)
        await self._collect(index, step, ran["first"])
        return step

    async def _drain(self, index: int, expected: int) -> int:
        options = self.options
        deadline = time.monotonic() + options.drain_s
        received, progress_at = -1, time.monotonic()
        while True:
            counts = await asyncio.gather(
                *(w.call({"cmd": "count", "step": index}) for w in self.subscribers)
            )
            now = time.monotonic()
            total = sum(c["received"] for c in counts)
            if total >= expected:
                return total
            if total != received:
                received, progress_at = total, now
            elif now - progress_at > options.stall_s:
                return total
            if now > deadline:
                return total
            await asyncio.sleep(0.05)

    async def _collect(self, index: int, step: Step, first_sent_ms: float) -> None:
        stats = await asyncio.gather(
            *(w.call({"cmd": "stats", "step": index}) for w in self.subscribers)
        )
        histogram = Histogram()
        last = 0.0
        for s in stats:
            step.received += s["received"]
            histogram.add(s["hist"], s["max_us"])
            if s["last"] is not None:
                last = max(last, s["last"])
        step.loss = max(0, step.expected - step.received)
        if step.received and last > first_sent_ms:
            # Over the step's publishing window at least: the first and last publications of
            # a slow step are far apart from its edges.
            window = max((last - first_sent_ms) / 1000, step.seconds)
            step.delivered_per_s = round(step.received / window, 1)
        step.p50_ms = rounded(histogram.quantile_ms(0.5))
        step.p99_ms = rounded(histogram.quantile_ms(0.99))
        step.max_ms = rounded(histogram.max_ms)
        if step.received:
            step.cpu_us_per_delivery = round(step.server_cpu_s * 1e6 / step.received, 1)

    async def counters(self) -> tuple[int, int]:
        counts = await asyncio.gather(
            *(w.call({"cmd": "count", "step": -1}) for w in self.subscribers)
        )
        return sum(c["disorder"] for c in counts), sum(c["dropped"] for c in counts)

    def _server_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.target.pids)

    def _loadgen_cpu(self) -> float:
        return sum(worker.cpu_seconds() for worker in self.workers)


def _log(message: str) -> None:
    print(message, flush=True)


def _step_line(result: Result, step: Step) -> str:
    return (
        f"  {result.server:6} {result.scenario:10} {step.label:>5} "
        f"offered {step.offered_per_s:>9,.0f}/s "
        f"delivered {step.delivered_per_s:>9,.0f}/s  p50 {step.p50_ms} p99 {step.p99_ms} "
        f"max {step.max_ms} ms  loss {step.loss}  cpu {step.cpu_us_per_delivery} us/delivery "
        f"(server {step.server_cores} cores, loadgen {step.loadgen_cores})"
    )


def keeps_up(step: Step, options: Options) -> bool:
    """Delivered (nearly) what was offered, without loss, with p99 within the limit."""
    return (
        not step.loss
        and step.delivered_per_s >= options.keep_up * step.offered_per_s
        and (step.p99_ms or 0.0) <= options.latency_limit_ms
    )


def _summary(step: Step, prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}deliveries_per_s": step.delivered_per_s,
        f"{prefix}offered_per_s": step.offered_per_s,
        f"{prefix}cpu_us_per_delivery": step.cpu_us_per_delivery,
        f"{prefix}server_cores": step.server_cores,
        f"{prefix}loadgen_cores": step.loadgen_cores,
        f"{prefix}p99_ms": step.p99_ms,
    }


async def ramp(run: Run, result: Result) -> None:
    """Raise the offered rate until delivery stops keeping up, narrow down the highest rate
    that keeps up (the saturation rate), then measure latency at fractions of it.

    The peak (the most delivered in any step, usually an overloaded one, where a server may
    batch its writes) is reported too; CPU per delivery is taken at the saturation rate."""
    options = run.options
    offered = run.scenario.start_rate
    # Warm-up (JIT, caches, first allocations), not recorded.
    await run.step(WARMUP_STEP, "warm", offered / 2, seconds=options.duration / 2)
    behind = 0  # consecutive steps that did not keep up: two end the ramp (one may be a hiccup)
    index = 0
    for index in range(options.max_steps):
        step = await _record(run, result, index, "ramp", offered)
        behind = 0 if keeps_up(step, options) else behind + 1
        if step.loss or behind >= 2:
            break
        offered *= options.factor
    # Between the highest rate that kept up and the next one that did not (geometric halves).
    ramped = index + 1
    for index in range(ramped, ramped + options.refine_steps):
        kept = [s.offered_per_s for s in result.steps if keeps_up(s, options)]
        if not kept or any(s.loss for s in result.steps):
            break
        low = max(kept)
        above = [s.offered_per_s for s in result.steps if s.offered_per_s > low]
        if not above:
            break
        await _record(run, result, index, "refine", math.sqrt(low * min(above)))
    peak = max(result.steps, key=lambda s: s.delivered_per_s)
    if not peak.delivered_per_s:
        raise RuntimeError("nothing was delivered")
    sustained = [s for s in result.steps if keeps_up(s, options)]
    best = max(sustained, key=lambda s: s.delivered_per_s) if sustained else peak
    result.saturation = {**_summary(best), "kept_up": bool(sustained), **_summary(peak, "peak_")}
    for n, fraction in enumerate(options.fractions):
        label = f"{fraction:.0%}"
        step = await _record(run, result, 100 + n, label, fraction * best.delivered_per_s)
        result.latency.append(
            {
                "fraction": fraction,
                "offered_per_s": step.offered_per_s,
                "delivered_per_s": step.delivered_per_s,
                "p50_ms": step.p50_ms,
                "p99_ms": step.p99_ms,
                "max_ms": step.max_ms,
                "loss": step.loss,
            }
        )


async def _record(run: Run, result: Result, index: int, label: str, offered: float) -> Step:
    step = await run.step(index, label, offered)
    result.steps.append(step)
    _log(_step_line(result, step))
    return step


def hard_timeout(scenario: Scenario, options: Options) -> float:
    """An upper bound on one scenario's run: every worker exits by itself after it."""
    steps = 1 + options.max_steps + options.refine_steps + len(options.fractions)
    per_step = 4 * options.duration + options.drain_s + 5
    return 120 + scenario.clients / 20 + steps * per_step


async def run_scenario(server: str, scenario: Scenario, options: Options, tmp: Path) -> Result:
    result = Result(server, scenario.name, scenario.description, scenario.clients)
    bound = hard_timeout(scenario, options)
    async with started(server, tmp / "server") as target:
        run = Run(target, scenario, options, tmp)
        try:
            await asyncio.wait_for(_measure(run, result, bound), bound + 30)
        except Exception as exc:  # reported in the results, the other scenarios still run
            result.errors.append(f"{type(exc).__name__}: {exc}")
            _log(f"  {server} {scenario.name}: failed: {exc}")
            if log := target.log_tail(10):
                _log(f"  {server} log:\n{log}")
        finally:
            await run.close()
    return result


async def _measure(run: Run, result: Result, bound: float) -> None:
    pids, options = run.target.pids, run.options
    await asyncio.sleep(options.settle_s / 2)
    before = sum(rss_bytes(pid) for pid in pids)
    await run.connect(result, bound)
    await asyncio.sleep(options.settle_s)
    idle = sum(rss_bytes(pid) for pid in pids)
    result.rss_before_mib = round(before / 2**20, 1)
    result.rss_idle_mib = round(idle / 2**20, 1)
    if result.connected:
        result.rss_per_idle_conn_kib = round((idle - before) / 1024 / result.connected, 1)
    _log(
        f"  {result.server:6} {result.scenario:10} connected {result.connected}/{result.clients} "
        f"in {result.connect_s}s, RSS {result.rss_before_mib} -> {result.rss_idle_mib} MiB "
        f"({result.rss_per_idle_conn_kib} KiB per connection)"
    )
    if result.connected < result.clients:
        raise RuntimeError(f"only {result.connected} of {result.clients} clients connected")
    if run.scenario.kind == "idle":
        return
    await run.open_publisher(bound)
    try:
        await ramp(run, result)
    finally:
        result.loss = sum(step.loss for step in result.steps)
        result.disorder, result.dropped = await run.counters()
