"""Collaborative documents under faults: two nodes sharing Redis and PostgreSQL behind the
repository's nginx, a node SIGKILLed with updates it never flushed, a lost pub/sub message,
every node restarted."""

from __future__ import annotations

import asyncio
import functools
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pycrdt import Text

from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.nginx import nginx
from tests.support.services import PrivateRedis, private_redis
from tests.support.sio import connected
from tests.support.ypeer import YPeer

# Nothing is flushed by the timer during a test: only a graceful stop, a reconcile or a
# client's re-join can put the updates in the store.
NEVER_FLUSH = {"TANDEM_DOC_FLUSH_INTERVAL_S": "10"}


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[dict[str, str]]:
    with shared_stores(tmp_path) as env:
        yield env


@asynccontextmanager
async def editor(url: str, node: LiveServer, user: str, doc: str) -> AsyncIterator[YPeer]:
    async with connected(url, node.token(user, docs={doc: "editor"})) as client:
        peer = YPeer(client, doc)
        assert (await peer.join())["ok"]
        try:
            yield peer
        finally:
            await peer.stop()


def append(word: str, text: Text) -> None:
    text.insert(len(text), word)


def connections(node: LiveServer) -> float:
    return metric(node, "tandem_connections")


def content(node: LiveServer, doc: str) -> str:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.get(f"{node.url}/api/docs/{doc}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    text: str = response.json()["content"]
    return text


async def test_nothing_is_lost_when_a_node_dies_with_unflushed_updates(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    env = {**shared, **NEVER_FLUSH}
    with ExitStack() as stack:
        a = stack.enter_context(live_server(tmp_path / "a", env))
        b = stack.enter_context(live_server(tmp_path / "b", env))
        proxy = stack.enter_context(
            nginx(tmp_path / "nginx", [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
        )
        async with editor(proxy.url, a, "alice", "kill") as alice:
            victim, survivor = (a, b) if connections(a) == 1 else (b, a)
            async with editor(survivor.url, survivor, "bob", "kill") as bob:
                await alice.edit(lambda t: t.insert(0, "typed on the doomed node. "))
                await bob.wait_text("typed on the doomed node. ")
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(10)
                await alice.client.disconnected.wait()
                # Offline on the page while it reconnects: merged on the way back.
                alice.text.insert(len(alice.text), "written offline. ")
                await bob.edit(lambda t: t.insert(0, ">> "))
                async with connected(proxy.url, a.token("alice", docs={"kill": "editor"})) as c:
                    await alice.rejoin(c)
                    expected = ">> typed on the doomed node. written offline. "
                    await alice.wait_text(expected)
                    await bob.wait_text(expected)
        # Every node restarted: the survivor stops (flushing), a fresh one reads the store.
        survivor.process.send_signal(signal.SIGTERM)
        survivor.process.wait(15)
        fresh = stack.enter_context(live_server(tmp_path / "fresh", env))
        assert content(fresh, "kill") == expected


async def test_a_killed_nodes_updates_are_reconciled_and_its_cursors_expire(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    ttl = 3.0
    env = {
        **shared,
        **NEVER_FLUSH,
        "TANDEM_DOC_UNLOAD_GRACE_S": "0.2",
        "TANDEM_PRESENCE_TTL_S": str(ttl),
    }
    with live_server(tmp_path / "a", env) as a, live_server(tmp_path / "b", env) as b:
        async with editor(b.url, b, "bob", "orphan") as bob:
            async with editor(a.url, a, "alice", "orphan") as alice:
                await alice.set_awareness({"user": {"name": "Alice"}, "cursor": None})
                await alice.edit(lambda t: t.insert(0, "alice's words, held by A and B only"))
                await bob.wait_text("alice's words, held by A and B only")
                await bob.wait_for(lambda: alice.doc.client_id in bob.others())
                # Alice is gone for good with her node: her words live only in B's memory,
                # her cursor on B until the node that held it stops vouching for it.
                a.process.send_signal(signal.SIGKILL)
                a.process.wait(10)
                killed = time.monotonic()
            await bob.wait_for(lambda: not bob.others(), timeout=ttl + 2)
            assert time.monotonic() - killed <= ttl + 1
        # Bob left: B unloads the document, first appending what the store lacks.
        async with asyncio.timeout(10):
            while True:
                if metric(b, "tandem_doc_events_total", 'kind="unloads"') >= 1:
                    break
                await asyncio.sleep(0.1)
        assert metric(b, "tandem_doc_events_total", 'kind="repairs"') == 1
        with live_server(tmp_path / "c", env) as c:
            assert content(c, "orphan") == "alice's words, held by A and B only"


def metric(node: LiveServer, name: str, labels: str = "") -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=2).text
    pattern = rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[tuple[PrivateRedis, dict[str, str]]]:
    """A private Redis (its connections may be cut) and a migrated PostgreSQL database."""
    with private_redis(tmp_path) as redis, shared_stores(tmp_path, redis=redis.url) as env:
        yield redis, env


async def test_a_lost_pubsub_message_is_healed(
    tmp_path: Path, private_cluster: tuple[PrivateRedis, dict[str, str]]
) -> None:
    redis, env = private_cluster
    with live_server(tmp_path / "a", env) as a, live_server(tmp_path / "b", env) as b:
        async with (
            editor(a.url, a, "alice", "heal") as alice,
            editor(b.url, b, "bob", "heal") as bob,
        ):
            await alice.edit(lambda t: t.insert(0, "before. "))
            await bob.wait_text("before. ")
            # Every subscriber connection is cut: B hears nothing until its listener is back,
            # and what A publishes meanwhile is gone from pub/sub for good.
            redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
            for word in ("lost? ", "not ", "for long."):
                await alice.edit(functools.partial(append, word))
            await bob.wait_text("before. lost? not for long.", timeout=10)
            assert "redis-doc-bus: redis pub/sub connection lost" in b.log()
            await bob.edit(lambda t: t.insert(0, "and back: "))
            await alice.wait_text("and back: before. lost? not for long.")
