"""The servers of the collaborative-documents benchmark (bench/docs.py), with what they share.

- A throwaway PostgreSQL database (created, and dropped with FORCE afterwards) on the server
  at TANDEM_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
- Redis between nodes: by default a private ``redis-server`` on a free loopback port (no
  persistence), started for the run and stopped by PID, so that its CPU time is the
  benchmark's alone; with ``redis="shared"`` the Redis at TANDEM_BENCH_REDIS_URL under a key
  prefix of its own (deleted afterwards), whose CPU is not attributed.
- Tandem: the schema migrated once (what ``python -m server migrate`` runs), then one
  ``python -m server serve`` per node
  (TANDEM_BROKER_URL=redis://...?prefix=..., the shared database, document and awareness rate
  limits raised); a user token granting ``bench*`` documents.
- Hocuspocus: one ``node bench/node/hocuspocus_server.js`` per node (@hocuspocus/server with
  @hocuspocus/extension-redis under a prefix; with ``persist``, @hocuspocus/extension-database
  storing each document's whole state in the same throwaway PostgreSQL database).

Every process is started on loopback, dies with the benchmark (PR_SET_PDEATHSIG) and is
stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from bench.loadgen import node_flags
from bench.processes import NODE_DIR, die_with_parent, free_port, stop
from bench.procstat import cpu_seconds
from bench.targets import API_KEY, JWT_SECRET, REDIS_URL, TANDEM_SETTINGS, _clean_env
from storage.migrate import upgrade
from tests.support.redis import delete_prefix

POSTGRES_ADMIN_URL = os.environ.get(
    "TANDEM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Typing is ~10 updates/s per editor, a moving cursor as many awareness updates: the default
# limits fit people; the benchmark's editors must never be throttled.
DOC_LIMITS = {
    "TANDEM_CLIENT_RATE_PER_S": "1000000",
    "TANDEM_CLIENT_BURST": "1000000",
    "TANDEM_DOC_RATE_PER_S": "1000000",
    "TANDEM_DOC_BURST": "1000000",
    "TANDEM_AWARENESS_RATE_PER_S": "1000000",
    "TANDEM_AWARENESS_BURST": "1000000",
}
FAMILIES = ("tandem", "hocuspocus")
HOCUSPOCUS_TABLE = """
CREATE TABLE IF NOT EXISTS hocuspocus_documents (
    name text PRIMARY KEY,
    state bytea NOT NULL,
    updated_at timestamptz NOT NULL
)
"""


@dataclass
class DocsTarget:
    family: str  # "tandem" | "hocuspocus"
    nodes: int
    urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_paths: list[Path] = field(default_factory=list)
    token: str = "bench"
    database: Database | None = None
    redis: PrivateRedis | None = None

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def log_tail(self, lines: int = 20) -> str:
        tails = []
        for path in self.log_paths:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tails.append(f"[{path.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(tails)

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class Database:
    name: str
    admin_url: str

    @property
    def url(self) -> str:
        """For asyncpg / pg: postgresql://.../<name>."""
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, timeout=10)

    async def backend_cpu(self) -> dict[int, float]:
        """utime+stime of every backend connected to this database, by PID (PostgreSQL's
        shared processes, the WAL writer and checkpointer, are not counted)."""
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                self.name,
            )
        finally:
            await connection.close()
        cpu = {}
        for row in rows:
            try:
                cpu[row["pid"]] = cpu_seconds(row["pid"])
            except OSError:
                pass
        return cpu


def backend_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two readings (new backends from zero; those
    that ended in between are lost, which the pools of both servers make rare)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@asynccontextmanager
async def postgres_database() -> AsyncIterator[Database]:
    name = f"tandem_bench_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"the documents benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL} "
            f"(set TANDEM_BENCH_POSTGRES_URL): {exc}"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield Database(name, POSTGRES_ADMIN_URL)
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# -- Redis -------------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    process: subprocess.Popen[bytes] | None
    host: str
    port: int
    prefix: str
    base_url: str
    log_path: Path | None = None

    def buffer_disconnects(self) -> int | None:
        """Clients the private server dropped for overrunning their output buffer (a pub/sub
        subscriber that read too slowly loses what was published meanwhile); None when
        unknown (the shared Redis)."""
        if self.log_path is None:
            return None
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        return text.count("overcoming of output buffer limits")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def cpu_seconds(self) -> float | None:
        """The private server's CPU time; None for a shared Redis (not ours to attribute)."""
        return cpu_seconds(self.process.pid) if self.process is not None else None


def _spawn_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    command = [
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
        *("--save", "", "--appendonly", "no", "--dir", str(tmp), "--loglevel", "warning"),
    ]
    with (tmp / f"redis-{port}.log").open("wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )


@asynccontextmanager
async def redis_server(mode: str, tmp: Path) -> AsyncIterator[PrivateRedis]:
    prefix = f"tandem-bench-{secrets.token_hex(4)}"
    if mode == "private" and shutil.which("redis-server") is None:
        print("bench: no redis-server on PATH; using the shared Redis", flush=True)
        mode = "shared"
    if mode == "shared":
        url = httpx.URL(REDIS_URL)
        redis = PrivateRedis(None, url.host or "127.0.0.1", url.port or 6379, prefix, REDIS_URL)
        try:
            yield redis
        finally:
            await delete_prefix(prefix, base=REDIS_URL)
        return
    port = free_port()
    process = await asyncio.to_thread(_spawn_redis, port, tmp)
    redis = PrivateRedis(
        process, "127.0.0.1", port, prefix, f"redis://127.0.0.1:{port}/0", tmp / f"redis-{port}.log"
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start") from None
                await asyncio.sleep(0.05)
        yield redis
    finally:
        await asyncio.to_thread(stop, process)


# -- the servers -------------------------------------------------------------------------------


def _tandem_env(database: Database, broker: str, node: int) -> dict[str, str]:
    env = _clean_env()
    env.update(TANDEM_SETTINGS)
    env.update(DOC_LIMITS)
    env["TANDEM_DATABASE_URL"] = database.sqlalchemy_url
    env["TANDEM_BROKER_URL"] = broker
    env["TANDEM_NODE_ID"] = f"bench-{node}"
    return env


def _spawn(
    command: list[str], env: dict[str, str], tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,  # the Node servers exit when it closes
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    return process, log_path


def tandem_token() -> str:
    """A user token granting every ``bench*`` document (editor), signed as the nodes check it
    (what ``tandem token --sub bench --doc 'bench*'`` prints, without a process start)."""
    from pydantic import SecretStr

    from server.auth.tokens import mint_token
    from server.config import Settings

    settings = Settings.model_construct(jwt_secret=SecretStr(JWT_SECRET))
    token, _ = mint_token(settings, sub="bench", ttl_s=86400, docs={"bench*": "editor"})
    return token


async def _start_tandem(target: DocsTarget, database: Database, broker: str, tmp: Path) -> None:
    # What `python -m server migrate` does, in this process (one interpreter start less).
    await asyncio.to_thread(upgrade, database.sqlalchemy_url)
    target.token = tandem_token()
    for node in range(target.nodes):
        port = free_port()
        env = _tandem_env(database, broker, node)
        serve = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        serve += ["--port", str(port)]
        process, log_path = await asyncio.to_thread(
            _spawn, serve, env, tmp / f"node{node}", f"tandem-{port}"
        )
        target.processes.append(process)
        target.log_paths.append(log_path)
        target.urls.append(f"http://127.0.0.1:{port}")


async def _start_hocuspocus(
    target: DocsTarget, database: Database | None, redis: PrivateRedis | None, tmp: Path
) -> None:
    if database is not None:
        connection = await database.connect()
        try:
            await connection.execute(HOCUSPOCUS_TABLE)
        finally:
            await connection.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["NODE_ENV"] = "production"
    for node in range(target.nodes):
        port = free_port()
        config: dict[str, object] = {"port": port, "maxSeconds": 3600}
        if redis is not None:
            config["redis"] = {"host": redis.host, "port": redis.port, "prefix": redis.prefix}
        if database is not None:
            config["postgres"] = database.url
        server = str(NODE_DIR / "hocuspocus_server.js")
        command = ["node", *node_flags(), server, json.dumps(config)]
        process, log_path = await asyncio.to_thread(
            _spawn, command, env, tmp / f"node{node}", f"hocuspocus-{port}"
        )
        target.processes.append(process)
        target.log_paths.append(log_path)
        target.urls.append(f"http://127.0.0.1:{port}")


async def _wait_ready(target: DocsTarget, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    path = "/health/ready" if target.family == "tandem" else "/"
    async with httpx.AsyncClient(timeout=1) as client:
        for url, process in zip(target.urls, target.processes, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{target.family} exited early:\n{target.log_tail()}")
                try:
                    if (await client.get(url + path)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{target.family} not ready within {within_s}s:\n{target.log_tail()}"
                    )
                await asyncio.sleep(0.1)


@asynccontextmanager
async def docs_cluster(
    family: str, nodes: int, tmp: Path, *, redis: str = "private", persist: bool = True
) -> AsyncIterator[DocsTarget]:
    """``nodes`` processes of ``family`` on loopback, sharing a fresh PostgreSQL database
    (Tandem always; Hocuspocus when ``persist``) and, with two or more nodes, Redis."""
    target = DocsTarget(family, nodes)
    async with AsyncExitStack() as stack:
        database = None
        if family == "tandem" or persist:
            database = await stack.enter_async_context(postgres_database())
        target.database = database
        if nodes > 1:
            target.redis = await stack.enter_async_context(redis_server(redis, tmp / "redis"))
        try:
            if family == "tandem":
                assert database is not None
                broker = "memory://"
                if target.redis is not None:
                    r = target.redis
                    broker = f"{r.base_url}?prefix={r.prefix}:"
                await _start_tandem(target, database, broker, tmp)
            else:
                await _start_hocuspocus(target, database, target.redis, tmp)
            await _wait_ready(target, 60.0)
            yield target
        finally:
            for process in target.processes:
                await asyncio.to_thread(stop, process)


async def create_tandem_document(target: DocsTarget, doc_id: str) -> None:
    """POST /api/docs (text), so that the editors' joins find it."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            target.urls[0] + "/api/docs",
            json={"id": doc_id, "format": "text"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        if response.status_code not in (201, 409):
            raise RuntimeError(f"POST /api/docs: {response.status_code} {response.text}")
