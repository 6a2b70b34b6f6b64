"""Private service instances for fault tests: started from local binaries, stopped by PID.

The shared Redis and PostgreSQL are never restarted; these run on free ports of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.live import free_port


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


@dataclass
class PrivateRedis:
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    appendonly: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is required for fault tests (apt-get install redis)")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.workdir)]
        args += ["--appendfsync", "always"] if self.appendonly else []
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip()

    def shutdown_nosave(self) -> None:
        """A crash: what was not persisted (everything, without appendonly) is gone."""
        self.cli("SHUTDOWN", "NOSAVE")
        if self.process is not None:
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def private_redis(workdir: Path, *, appendonly: bool = False) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(workdir, appendonly=appendonly)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} (PostgreSQL server binaries) is required for fault tests")
    return binary


def _as_postgres() -> dict[str, Any]:
    """initdb and postgres refuse to run as root: the child becomes the postgres user (and
    keeps its own PID, so signals reach postgres itself)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@dataclass
class PrivatePostgres:
    # Its own directory under /tmp: pytest's are private to root, and postgres runs as postgres.
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tandem-pg-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.workdir / "pgdata"

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        initdb = [_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres"]
        initdb += ["--auth=trust", "--no-sync", "-E", "UTF8"]
        subprocess.run(
            initdb, check=True, capture_output=True, timeout=120, cwd=self.workdir, **_as_postgres()
        )

    def start(self) -> None:
        args = [_postgres_bin("postgres"), "-D", str(self.data), "-p", str(self.port)]
        args += ["-k", str(self.workdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with (self.workdir / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, **_as_postgres()
            )
        _wait_port(self.port, timeout=30)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): what `pg_ctl restart -m fast` does first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    postgres = PrivatePostgres()
    try:
        postgres.init()
        postgres.start()
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(postgres.workdir, ignore_errors=True)
