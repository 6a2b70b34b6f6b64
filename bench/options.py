"""What a benchmark run measures: the scenarios and the knobs of the ramp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["fanout", "o2o", "idle"]
Path_ = Literal["socket", "http", "batch"]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    clients: int
    publish: Path_ = "socket"
    start_rate: float = 2500.0  # offered deliveries/s of the first ramp step

    @property
    def description(self) -> str:
        match self.kind:
            case "fanout":
                return (
                    f"fan-out to {self.clients} subscribers of one channel, on the {self.publish}"
                )
            case "o2o":
                clients = f"{self.clients} clients each on its own channel"
                over = "HTTP batches" if self.publish == "batch" else self.publish
                return f"one-to-one, {clients}, published over {over}"
            case _:
                return f"{self.clients} connected, subscribed, idle clients"


SCENARIOS = {
    "fanout1k": Scenario("fanout1k", "fanout", 1000),
    "fanout5k": Scenario("fanout5k", "fanout", 5000),
    "o2o": Scenario("o2o", "o2o", 2000, "http", start_rate=500),
    "o2o-socket": Scenario("o2o-socket", "o2o", 2000, "socket", start_rate=500),
    "o2o-batch": Scenario("o2o-batch", "o2o", 2000, "batch", start_rate=2000),
    "idle": Scenario("idle", "idle", 5000),
}
QUICK_CLIENTS = {
    "fanout1k": 100,
    "fanout5k": 250,
    "o2o": 100,
    "o2o-socket": 100,
    "o2o-batch": 100,
    "idle": 250,
}


@dataclass
class Options:
    servers: list[str] = field(default_factory=lambda: ["tandem", "bare", "node"])
    scenarios: list[Scenario] = field(default_factory=lambda: list(SCENARIOS.values()))
    # Seconds of publishing per step (longer for slow rates: at least `min_publications`).
    duration: float = 3.0
    # The ramp: offered deliveries/s start at the scenario's `start_rate` and grow by `factor`
    # per step until two steps in a row fall behind (delivered below `keep_up` of the offered
    # rate, or p99 above `latency_limit_ms`), something is lost, or `max_steps` ran.
    factor: float = 1.6
    max_steps: int = 10
    keep_up: float = 0.9
    latency_limit_ms: float = 1000.0
    min_publications: int = 3
    refine_steps: int = 2  # after the ramp, between the last rate kept up and the next
    # Latency is measured again at these fractions of the saturation rate.
    fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    # After a step, wait this long at most for the last deliveries (and give up after
    # `stall_s` without progress): whatever has not arrived then counts as lost.
    drain_s: float = 30.0
    stall_s: float = 5.0
    workers: int = 2  # subscriber processes
    publishers: int = 4  # publisher sockets, in one publisher process
    http_connections: int = 32  # keep-alive connections of the HTTP publisher
    deflate: bool = False  # offer permessage-deflate like browsers do
    # Subscribers: "socketio" (socket.io-client) or "ws" (the same frames over `ws` directly:
    # measured about a third less load-generator CPU per delivery in fan-out).
    client: str = "socketio"
    connect_concurrency: int = 50  # connection attempts in flight per worker
    settle_s: float = 2.0  # after connecting, before reading the idle RSS
