"""Real Tandem nodes for tests: a uvicorn subprocess on an ephemeral port, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret-for-tandem-tests-0123456789abcdef"
API_KEY = "test-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, sub: str = "alice", *, ttl: float = 3600, **claims: object) -> str:
        return make_token(sub, ttl=ttl, **claims)  # type: ignore[arg-type]

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self, *samples: str) -> dict[str, float]:
        """The values of ``samples`` (e.g. ``'tandem_subscribe_requests_total{form="batch"}'``)
        on the node's /metrics; 0 for one not exposed yet."""
        values = dict.fromkeys(samples, 0.0)
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in values:
                values[name] = float(value)
        return values

    def subscribe_counts(self) -> dict[str, float]:
        """``subscribe_many`` (batch) and ``subscribe`` (single) requests the node admitted,
        and the requests it answered ``rate_limited``."""
        samples = {
            'tandem_subscribe_requests_total{form="batch"}': "batch",
            'tandem_subscribe_requests_total{form="single"}': "single",
            'tandem_request_errors_total{code="rate_limited"}': "rate_limited",
        }
        return {samples[k]: v for k, v in self.metrics(*samples).items()}


def make_token(
    sub: str | None = "alice",
    *,
    ttl: float = 3600,
    secret: str = TEST_SECRET,
    algorithm: str = "HS256",
    **claims: object,
) -> str:
    now = time.time()
    payload: dict[str, object] = {"iat": int(now), "exp": now + ttl}
    if sub is not None:
        payload["sub"] = sub
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def server_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TANDEM_") and key != "PYTHONPATH"
    }
    env.update(
        {
            "TANDEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'tandem.db'}",
            "TANDEM_JWT_SECRET": TEST_SECRET,
            "TANDEM_API_KEYS": API_KEY,
            "TANDEM_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@contextmanager
def live_server(
    tmp: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    startup_timeout: float = 20.0,
    port: int | None = None,
) -> Iterator[LiveServer]:
    """Start ``python -m server serve`` and wait until it is ready; stop it by PID after.

    ``port``: the one a stopped node had, to restart it where its clients reconnect."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = server_env(tmp, extra_env)
    log_path = tmp / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", port, process, log_path, env)
    try:
        _wait_ready(server, startup_timeout)
        yield server
    finally:
        stop(server)


def _wait_ready(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout}s:\n{server.log()}")


def stop(server: LiveServer, *, timeout: float = 15.0) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)
