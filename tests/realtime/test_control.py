"""The control plane over each broker: heartbeats, requests gathered from every node within a
deadline, missing nodes named, and whatever malformed arrives on its channels dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from realtime.broker import Broker, BrokerOptions, Publication, create_broker
from realtime.channels import UnknownNamespace
from realtime.control import (
    HEARTBEAT_CHANNEL,
    REQUEST_CHANNEL,
    ControlPlane,
    is_control,
    reply_channel,
)
from server.config import Settings
from server.namespaces import load_namespaces
from tests.realtime.test_broker_contract import wait_ready
from tests.support.redis import broker_url, redis_prefix, unique_prefix
from tests.support.redis_cluster import PrivateRedisCluster

Cluster = Callable[[int], AbstractAsyncContextManager[list[tuple[ControlPlane, Broker]]]]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """``n`` nodes, each a control plane on its own broker (memory: one node)."""
    redis_cluster: PrivateRedisCluster | None = None
    if request.param == "redis-cluster":
        redis_cluster = request.getfixturevalue("redis_cluster")

    @asynccontextmanager
    async def make(n: int) -> AsyncIterator[list[tuple[ControlPlane, Broker]]]:
        async with AsyncExitStack() as stack:
            url = "memory://"
            if redis_cluster is not None:
                url = redis_cluster.broker_url(unique_prefix())
            elif request.param == "redis":
                url = broker_url(await stack.enter_async_context(redis_prefix()))
            else:
                n = 1  # the memory broker is one node: it answers alone
            nodes = []
            for i in range(n):
                control = ControlPlane(node_id=f"n{i}", heartbeat_s=0.1, info=info(i))

                async def route(pub: Publication, control: ControlPlane = control) -> None:
                    assert is_control(pub.channel)
                    await control.on_publication(pub)

                broker = create_broker(url, BrokerOptions(node_id=f"n{i}"), route)
                control.use(broker)
                await stack.enter_async_context(broker)
                await wait_ready(broker)
                await stack.enter_async_context(control)
                nodes.append((control, broker))
            await until(lambda: all(len(c.nodes()) == n for c, _ in nodes))
            yield nodes

    return make


def info(connections: int) -> Callable[[], dict[str, Any]]:
    return lambda: {"connections": connections}


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within}s")


def echo(node: str) -> Callable[[Mapping[str, Any]], Any]:
    async def handler(args: Mapping[str, Any]) -> Any:
        if args.get("bad"):
            raise ValueError("bad argument")
        return {"node": node, "x": args.get("x")}

    return handler


async def test_every_node_answers_a_request(cluster: Cluster) -> None:
    async with cluster(2) as nodes:
        for control, _ in nodes:
            control.handle("echo", echo(control.node_id))
        asker = nodes[-1][0]
        gathered = await asker.request("echo", {"x": 7}, wait_s=5)
        listed = {n.node: n for n in asker.nodes()}
    expected = [c.node_id for c, _ in nodes]
    assert sorted(gathered.replies) == expected and gathered.missing == []
    assert all(gathered.replies[n] == {"node": n, "x": 7} for n in expected)
    assert sorted(listed) == expected and all(n.alive for n in listed.values())
    assert [listed[n].info for n in expected] == [{"connections": i} for i in range(len(nodes))]


async def test_failures_are_answers_not_missing_nodes(cluster: Cluster) -> None:
    async with cluster(2) as nodes:
        for control, _ in nodes:
            control.handle("echo", echo(control.node_id))
        asker = nodes[0][0]
        bad = await asker.request("echo", {"bad": True}, wait_s=5)
        unknown = await asker.request("nope", {}, wait_s=5)
    everyone = sorted(c.node_id for c, _ in nodes)
    assert bad.replies == {} and bad.missing == [] and sorted(bad.errors) == everyone
    assert set(bad.errors.values()) == {"bad argument"}
    assert unknown.missing == [] and all("unknown operation" in e for e in unknown.errors.values())


async def test_a_silent_node_is_missing_after_the_deadline_and_a_leaving_one_forgotten(
    cluster: Cluster,
) -> None:
    async with cluster(1) as nodes:
        control, broker = nodes[0]
        control.handle("echo", echo(control.node_id))
        beat = {"node": "ghost", "started_at": time.time(), "info": {}}
        await broker.publish(HEARTBEAT_CHANNEL, "control.heartbeat", beat)
        await until(lambda: "ghost" in {n.node for n in control.nodes()})
        started = time.monotonic()
        gathered = await control.request("echo", {}, wait_s=0.5)
        waited = time.monotonic() - started
        assert gathered.missing == ["ghost"] and list(gathered.replies) == [control.node_id]
        assert 0.4 < waited < 2
        # Three beats later it counts as down: still reported, no longer waited for.
        await until(lambda: not next(n for n in control.nodes() if n.node == "ghost").alive)
        started = time.monotonic()
        again = await control.request("echo", {}, wait_s=3)
        assert again.missing == ["ghost"] and time.monotonic() - started < 1
        await broker.publish(HEARTBEAT_CHANNEL, "control.leaving", {"node": "ghost"})
        await until(lambda: "ghost" not in {n.node for n in control.nodes()})


async def test_malformed_control_messages_are_dropped(cluster: Cluster) -> None:
    async with cluster(1) as nodes:
        control, broker = nodes[0]
        calls: list[Mapping[str, Any]] = []

        async def record(args: Mapping[str, Any]) -> str:
            calls.append(args)
            return "ok"

        control.handle("record", record)
        junk: list[tuple[str, str, Any]] = [
            (REQUEST_CHANNEL, "control.request", "not a dict"),
            # No deadline, and one long past (replayed after an outage): never run.
            (REQUEST_CHANNEL, "control.request", {"id": "1", "from": "x", "op": "record"}),
            (
                REQUEST_CHANNEL,
                "control.request",
                {"id": "1", "from": "x", "op": "record", "deadline": time.time() - 60},
            ),
            (REQUEST_CHANNEL, "control.request", {"id": 5, "from": "x", "op": "record"}),
            (REQUEST_CHANNEL, "control.request", {"id": "1", "from": "x" * 65, "op": "record"}),
            (REQUEST_CHANNEL, "control.request", {"id": "1", "from": "x", "op": ["record"]}),
            (REQUEST_CHANNEL, "other.event", {"id": "1", "from": "x", "op": "record"}),
            (HEARTBEAT_CHANNEL, "control.heartbeat", {"node": ""}),
            (HEARTBEAT_CHANNEL, "control.heartbeat", {"node": "n9", "started_at": "soon"}),
            (HEARTBEAT_CHANNEL, "control.heartbeat", [1, 2]),
            (reply_channel(control.node_id), "control.reply", {"id": None, "node": "n9"}),
            (reply_channel(control.node_id), "control.reply", {"id": "x", "node": "n9"}),
        ]
        for channel, event, data in junk:
            await broker.publish(channel, event, data)
        gathered = await control.request("record", {"n": 1}, wait_s=5)
        assert [n.node for n in control.nodes()] == [control.node_id]
    assert gathered.replies == {control.node_id: "ok"} and gathered.missing == []
    assert calls == [{"n": 1}]


def test_no_client_can_name_a_control_channel() -> None:
    for name in (HEARTBEAT_CHANNEL, REQUEST_CHANNEL, reply_channel("n0")):
        with pytest.raises(UnknownNamespace):
            load_namespaces(Settings()).parse(name)
