"""A private Redis Cluster for tests: three primaries and three replicas on loopback ports.

Started from the local ``redis-server`` (7+) and ``redis-cli --cluster create``, each node in a
directory of its own, stopped by PID. Starting is bounded in time and fails loudly: the cluster
tests never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from tests.support.live import free_port

START_TIMEOUT_S = 30.0


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10
        )
        return result.stdout.strip()

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class RoleLine:
    """One line of CLUSTER NODES."""

    node_id: str
    address: str
    flags: set[str]
    primary_id: str
    slots: list[tuple[int, int]]

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags and "fail" not in self.flags


@dataclass
class PrivateRedisCluster:
    workdir: Path
    primaries: int = 3
    replicas: int = 1  # per primary
    node_timeout_ms: int = 1000
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A URL for Tandem's cluster mode, through the first node still running."""
        node = next(node for node in self.nodes if node.alive)
        return f"redis://{node.address}/0"

    def broker_url(self, prefix: str) -> str:
        return f"{self.url}?prefix={prefix}&cluster=1"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            raise RuntimeError("the Redis Cluster tests need redis-server and redis-cli (7+)")
        deadline = time.monotonic() + timeout
        for i in range(self.primaries * (1 + self.replicas)):
            node = ClusterNode(free_port(), free_port(), self.workdir / f"node-{i}")
            node.workdir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            self._spawn(binary, node)
        for node in self.nodes:
            self._until(deadline, partial(self._answers, node), f"{node.address} up")
        create = ["redis-cli", "--cluster", "create", *(n.address for n in self.nodes)]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        result = subprocess.run(
            create, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic())
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
            )
        self.wait_healthy(deadline - time.monotonic())

    @staticmethod
    def _answers(node: ClusterNode) -> bool:
        return node.cli("PING") == "PONG"

    def _spawn(self, binary: str, node: ClusterNode) -> None:
        args = ["--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.workdir)]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-port", str(node.bus_port)]
        args += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        args += ["--save", "", "--appendonly", "no", "--logfile", "redis.log"]
        node.process = subprocess.Popen([binary, *args], cwd=node.workdir)

    def wait_healthy(self, timeout: float) -> None:
        """Until every running node says the cluster is ok and every primary has as many
        replicas linked as asked (a failover needs one to promote)."""
        deadline = time.monotonic() + timeout

        def healthy() -> bool:
            running = [node for node in self.nodes if node.alive]
            if any("cluster_state:ok" not in node.cli("CLUSTER", "INFO") for node in running):
                return False
            primaries = {line.address for line in self.topology() if line.is_primary and line.slots}
            return len(primaries) == self.primaries and all(
                "master_link_status:up" in node.cli("INFO", "replication")
                for node in running
                if node.address not in primaries
            )

        self._until(deadline, healthy, "the cluster healthy")

    def wait_primary(self, key: str, node: ClusterNode, timeout: float) -> None:
        """Until ``node`` serves ``key``'s slot (``CLUSTER FAILOVER`` answers OK at once and
        hands the slots over after)."""
        deadline = time.monotonic() + timeout
        self._until(deadline, lambda: self.primary_of(key).port == node.port, f"{node} primary")

    def topology(self) -> list[RoleLine]:
        """CLUSTER NODES as one running node sees it."""
        node = next(node for node in self.nodes if node.alive)
        lines = []
        for raw in node.cli("CLUSTER", "NODES").splitlines():
            parts = raw.split()
            if len(parts) < 8:
                continue
            slots = []
            for part in parts[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                first, _, last = part.partition("-")
                slots.append((int(first), int(last or first)))
            address = parts[1].split("@")[0]
            lines.append(RoleLine(parts[0], address, set(parts[2].split(",")), parts[3], slots))
        return lines

    def primary_of(self, key: str) -> ClusterNode:
        """The running node that serves ``key``'s slot."""
        slot = int(next(node for node in self.nodes if node.alive).cli("CLUSTER", "KEYSLOT", key))
        for line in self.topology():
            if line.is_primary and any(first <= slot <= last for first, last in line.slots):
                return next(node for node in self.nodes if node.address == line.address)
        raise LookupError(f"no primary serves slot {slot}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL, by PID: a crash, with whatever the replica had not received lost."""
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)

    def _until(self, deadline: float, check: Callable[[], bool], what: str) -> None:
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {node.address}\n{node.log()[-2000:]}" for node in self.nodes)
        raise RuntimeError(f"Redis Cluster: {what} not reached in time\n{logs}")


@contextmanager
def private_redis_cluster(*, node_timeout_ms: int = 1000) -> Iterator[PrivateRedisCluster]:
    """A fresh cluster in a temporary directory, stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="tandem-redis-cluster-"))
    cluster = PrivateRedisCluster(workdir, node_timeout_ms=node_timeout_ms)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """One cluster for the session's contract tests (each test under a prefix of its own)."""
    with private_redis_cluster() as cluster:
        yield cluster
