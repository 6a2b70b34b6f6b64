"""How Tandem reaches Redis: a single server or a Redis Cluster, named by one URL.

``redis://host:6379/0?prefix=tandem:`` is one Redis; ``&sharded=1`` makes its pub/sub sharded
(``SSUBSCRIBE``/``SPUBLISH``, Redis 7+). ``redis://node:6379?prefix=tandem:&cluster=1`` is a Redis
Cluster reached through any of its nodes (or a managed service's configuration endpoint);
pub/sub is then always sharded, so a publication travels only within the shard that owns its
channel. Every key Tandem writes is hash-tagged on its channel (``{prefix}{<channel>}:...``), so
one channel's keys, scripts and shard channel live in one slot.

The remaining query parameters (``ssl_cert_reqs``, ``password``...) go to redis-py unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

# What a lost or unreachable Redis (or cluster node) raises.
CONNECT_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

# Commands one client runs at once (a burst of subscribes waits for a free connection).
MAX_CONNECTIONS = 64
_TIMEOUT_S = 2.0

Commands = aioredis.Redis | RedisCluster


class RedisConfigError(ValueError):
    """The broker URL cannot work with the Redis it names; the message says what to change."""


def _flag(query: dict[str, str], name: str) -> bool:
    return query.pop(name, "0").lower() in ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str  # without Tandem's own options
    prefix: str
    sharded: bool
    cluster: bool

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """Take Tandem's own options (``prefix``, ``sharded``, ``cluster``) out of the URL."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        prefix = query.pop("prefix", "tandem:")
        sharded = _flag(query, "sharded")
        cluster = _flag(query, "cluster")
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        if cluster:
            if "{" in prefix or "}" in prefix:
                raise RedisConfigError(
                    f"prefix {prefix!r}: no braces on a Redis Cluster (keys are hash-tagged "
                    "on the channel, {channel})"
                )
            if parts.path.strip("/") not in ("", "0"):
                raise RedisConfigError("a Redis Cluster has database 0 only: drop the /db")
        return cls(clean, prefix, sharded or cluster, cluster)

    def key(self, channel: str, suffix: str) -> str:
        """The key (or shard channel) ``suffix`` of ``channel``, in the channel's slot."""
        return f"{self.prefix}{{{channel}}}:{suffix}"

    def node_url(self, host: str, port: int) -> str:
        """This URL (credentials, TLS options) pointed at one node of the cluster."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        netloc = f"{userinfo}@{address}" if userinfo else address
        return urlunsplit(parts._replace(netloc=netloc, path=""))


def command_client(target: RedisTarget) -> Commands:
    """The client commands and scripts go through. Commands time out after 2 s so an
    unreachable Redis answers fast.

    On one Redis, a burst (hundreds of subscribes at once) beyond the pool waits up to 2 s for
    a free connection rather than failing with "Too many connections". A cluster client
    refuses instead: its callers go through a ``CallGate``. It follows
    MOVED redirections and failovers by itself, retrying a failed command a few times within
    about a second before giving up.
    """
    if target.cluster:
        return RedisCluster.from_url(
            target.url,
            max_connections=MAX_CONNECTIONS,
            socket_timeout=_TIMEOUT_S,
            socket_connect_timeout=_TIMEOUT_S,
            health_check_interval=10,
            retry=Retry(EqualJitterBackoff(cap=0.5, base=0.05), 3),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        target.url,
        max_connections=MAX_CONNECTIONS,
        timeout=_TIMEOUT_S,
        socket_timeout=_TIMEOUT_S,
        socket_connect_timeout=_TIMEOUT_S,
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


class CallGate:
    """What each call through ``command_client(target)`` passes (``async with gate(redis):``).

    Nothing on a single Redis. On a cluster, at most ``MAX_CONNECTIONS`` calls at once (the
    cluster client refuses more, where a single Redis's pool makes callers wait), each after
    the client has read the cluster's topology: redis-py (8.1) fails commands sent
    concurrently while it re-reads it after a failover ("'NoneType' object has no attribute
    'writelines'"), not commands that wait for it.
    """

    def __init__(self, target: RedisTarget) -> None:
        self._limit = asyncio.Semaphore(MAX_CONNECTIONS) if target.cluster else None

    @contextlib.asynccontextmanager
    async def __call__(self, redis: Commands) -> AsyncIterator[None]:
        if self._limit is None or not isinstance(redis, RedisCluster):
            yield
            return
        async with self._limit:
            await redis.initialize()  # at once when it knows the topology
            yield


async def discover(redis: Commands) -> None:
    """Read a cluster's topology now rather than at the first command (nothing on a single
    Redis); if the cluster cannot be reached yet, the first command tries again."""
    if isinstance(redis, RedisCluster):
        with contextlib.suppress(*CONNECT_ERRORS):
            await redis.initialize()


def primaries(redis: Commands) -> dict[str, Any]:
    """Where commands for every shard go: the primaries on a cluster (a dead replica is no
    outage), the server otherwise."""
    return {"target_nodes": RedisCluster.PRIMARIES} if isinstance(redis, RedisCluster) else {}


async def check_server(target: RedisTarget) -> None:
    """Refuse, saying what to change, a URL that does not fit the server it names.

    A cluster node without ``cluster=1`` (every command would be redirected), ``cluster=1`` on
    a single Redis, or a cluster that lacks what Tandem needs: Redis 7 (sharded pub/sub) and
    ``CLUSTER MYID`` from scripts (how a stream notices that a failover promoted a replica).
    Says nothing when the server cannot be reached now: the clients connect when it is back.

    Raises:
        RedisConfigError: the URL cannot work with this server.
    """
    probe = aioredis.from_url(
        target.url,
        socket_connect_timeout=_TIMEOUT_S,
        socket_timeout=_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        try:
            server = await probe.info("server")
            clustered = (await probe.info("cluster")).get("cluster_enabled") == 1
        except CONNECT_ERRORS:
            return
        where = f"{urlsplit(target.url).hostname}:{urlsplit(target.url).port or 6379}"
        if clustered and not target.cluster:
            raise RedisConfigError(f"{where} is a Redis Cluster node: add cluster=1 to the URL")
        if target.cluster and not clustered:
            raise RedisConfigError(
                f"cluster=1, but {where} is not a Redis Cluster node (cluster_enabled:0): "
                "drop cluster=1 to use it as a single Redis"
            )
        version = str(server.get("redis_version", "0"))
        if target.sharded and int(version.split(".")[0]) < 7:
            raise RedisConfigError(
                f"sharded pub/sub (sharded=1, cluster=1) needs Redis 7 or later; {where} runs "
                f"{version}"
            )
        if target.cluster:
            try:
                await probe.eval('return redis.call("CLUSTER", "MYID")', 0)
            except ResponseError as exc:
                raise RedisConfigError(
                    f"{where} refuses CLUSTER MYID in scripts ({exc}); Tandem's scripts use it "
                    "to notice failovers"
                ) from None
    finally:
        await probe.aclose()
