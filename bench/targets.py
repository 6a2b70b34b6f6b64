"""The servers under test: Tandem, a bare python-socketio server, Node's socket.io.

Each is started fresh for every scenario, as one process on a free loopback port, and speaks
the same contract: connect (auth {token}), ``subscribe`` {channel}, ``publish`` {channel, event,
data}, ``POST /api/publish`` with a bearer API key, publications as events named by their type
carrying the envelope {channel, type, offset, epoch, ts, data}.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.processes import NODE_DIR, ROOT, die_with_parent, free_port, stop
from tests.support.redis import delete_prefix

SERVERS = ("tandem", "bare", "node", "tandem2")
# tandem2: two Tandem processes sharing Redis (subscribers split between them, publishers on
# the first), under a key prefix of its own that is deleted afterwards.
REDIS_URL = os.environ.get("TANDEM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
JWT_SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
API_KEY = "bench-api-key"
# Tandem's per-connection publish rate limit (20/s by default) would throttle the publisher.
TANDEM_SETTINGS = {
    "TANDEM_ENV": "development",
    "TANDEM_BROKER_URL": "memory://",
    "TANDEM_JWT_SECRET": JWT_SECRET,
    "TANDEM_API_KEYS": API_KEY,
    "TANDEM_LOG_LEVEL": "warning",
    "TANDEM_DEMO": "false",
    "TANDEM_CLIENT_RATE_PER_S": "1000000",
    "TANDEM_CLIENT_BURST": "1000000",
}


@dataclass
class Target:
    name: str
    urls: list[str]  # one per process; publishers use the first
    processes: list[subprocess.Popen[bytes]]
    token: str
    api_key: str
    log_paths: list[Path]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def log_tail(self, lines: int = 30) -> str:
        tails = []
        for path in self.log_paths:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tails.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tandem(port: int, tmp: Path, env: dict[str, str]) -> tuple[list[str], str]:
    env.update(TANDEM_SETTINGS)
    env["TANDEM_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp / 'tandem.db'}"
    command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
    return [*command, "--port", str(port)], "/health/ready"


def _bare(port: int, tmp: Path, env: dict[str, str]) -> tuple[list[str], str]:
    env["PYTHONPATH"] = str(ROOT)
    module = "bench.servers.bare_socketio"
    return [sys.executable, "-m", module, "--port", str(port)], "/health"


def _node(port: int, tmp: Path, env: dict[str, str]) -> tuple[list[str], str]:
    return ["node", str(NODE_DIR / "server.js"), str(port)], "/health"


_COMMANDS = {"tandem": _tandem, "bare": _bare, "node": _node}


def tandem_token(env: dict[str, str], cwd: Path) -> str:
    """A user token allowed on every ``room:`` channel, from the ``tandem token`` CLI."""
    command = [sys.executable, "-m", "server", "token", "--sub", "bench", "--channel", "room:*"]
    result = subprocess.run(
        [*command, "--ttl", "86400"],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout.decode().strip()


def _spawn(
    name: str, tmp: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str, int, str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _clean_env()
    command, health = _COMMANDS[name](port, tmp, env)
    env.update(extra)
    log_path = tmp / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,  # the Node server exits when this closes
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        token = tandem_token(env, tmp) if name == "tandem" else "bench"
    except BaseException:
        stop(process)
        raise
    return process, health, port, token, log_path


@asynccontextmanager
async def started(
    name: str, tmp: Path, extra: dict[str, str] | None = None
) -> AsyncIterator[Target]:
    """Start server ``name`` in ``tmp`` and wait until it answers; stop it by PID after.

    ``extra``: environment on top of the server's own (e.g. TANDEM_PING_INTERVAL_S)."""
    if name != "tandem2":
        async with _processes(name, tmp, [dict(extra or {})]) as target:
            yield target
        return
    prefix = f"tandem-bench-{secrets.token_hex(4)}:"
    both = {**(extra or {}), "TANDEM_BROKER_URL": f"{REDIS_URL}?prefix={prefix}"}
    try:
        async with _processes("tandem", tmp, [both, both]) as target:
            target.name = name
            yield target
    finally:
        await delete_prefix(prefix, base=REDIS_URL)


@asynccontextmanager
async def _processes(name: str, tmp: Path, extras: list[dict[str, str]]) -> AsyncIterator[Target]:
    target = Target(name, [], [], "", API_KEY, [])
    try:
        health = "/"
        for i, extra in enumerate(extras):
            process, health, port, token, log_path = await asyncio.to_thread(
                _spawn, name, tmp / str(i), extra
            )
            target.processes.append(process)
            target.urls.append(f"http://127.0.0.1:{port}")
            target.log_paths.append(log_path)
            target.token = token
        await _wait_ready(target, health, 30.0)
        yield target
    finally:
        for process in target.processes:
            await asyncio.to_thread(stop, process)


async def _wait_ready(target: Target, path: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=1) as client:
        for url, process in zip(target.urls, target.processes, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{target.name} exited early:\n{target.log_tail()}")
                try:
                    if (await client.get(url + path)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{target.name} not ready within {within_s}s:\n{target.log_tail()}"
                    )
                await asyncio.sleep(0.1)
