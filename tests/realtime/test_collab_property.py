"""Property: whatever the interleaving of edits (online and offline), disconnects, reconnects
to any node, lost bus messages, node crashes and restarts, every client and the store end
with the same text once everyone is back."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from pycrdt import Text

from realtime.collab.bus import BusKind, MemoryExchange
from realtime.collab.crdt import state_vector
from storage.database import Database
from storage.documents import SqlDocumentStore
from tests.realtime.collab_nodes import (
    FakeClient,
    Node,
    crash,
    create,
    eventually,
    node_engine,
    stored_text,
)

CLIENTS = 3
NODES = 2
OPTIONS: dict[str, Any] = {
    "unload_grace": 0.02,
    "compact_after_rows": 6,
    "flush_interval": 0.01,
    "awareness_ttl": 5,
}

op = st.one_of(
    st.tuples(
        st.just("insert"),
        st.integers(0, CLIENTS - 1),
        st.floats(0, 1),
        st.text("abcxyz", min_size=1, max_size=4),
    ),
    st.tuples(st.just("delete"), st.integers(0, CLIENTS - 1), st.floats(0, 1), st.integers(1, 3)),
    st.tuples(st.just("disconnect"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("reconnect"), st.integers(0, CLIENTS - 1), st.integers(0, NODES - 1)),
    st.tuples(st.just("restart"), st.integers(0, NODES - 1), st.booleans()),
    st.tuples(st.just("lose"), st.integers(0, NODES - 1)),
    st.tuples(st.just("pause"), st.just(0)),
)


@dataclass
class World:
    store: SqlDocumentStore
    exchange: MemoryExchange
    nodes: list[Node]
    clients: list[FakeClient]
    generation: int = 0

    async def start(self, index: int) -> None:
        self.generation += 1
        node = node_engine(self.store, self.exchange, f"n{index}-{self.generation}", **OPTIONS)
        await node.engine.__aenter__()
        self.nodes[index] = node

    async def stop(self, index: int, *, graceful: bool) -> None:
        node = self.nodes[index]
        for client in self.clients:
            if client.node is node and client.connected:
                client.connected = False  # the connection dies with the node
                node.clients.pop(client.conn, None)
        if graceful:
            await node.engine.__aexit__(None, None, None)
        else:
            await crash(node)

    async def run(self, step: tuple[Any, ...]) -> None:
        match step:
            case ("insert", i, where, value):
                client = self.clients[i]
                await self.edit(client, lambda t: t.insert(int(where * len(t)), value))
            case ("delete", i, where, count):
                client = self.clients[i]

                def delete(text: Any) -> None:
                    start = int(where * len(text))
                    end = min(len(text), start + count)
                    if end > start:
                        del text[start:end]

                await self.edit(client, delete)
            case ("disconnect", i):
                if self.clients[i].connected:
                    await self.clients[i].disconnect()
            case ("reconnect", i, n):
                client = self.clients[i]
                if not client.connected:
                    client.node = self.nodes[n]
                    await client.join()
            case ("restart", n, graceful):
                await self.stop(n, graceful=graceful)
                await self.start(n)
            case ("lose", n):
                self.nodes[n].bus.drop[BusKind.UPDATE] = 1
            case ("pause", _):
                await asyncio.sleep(0.03)

    def settled(self) -> bool:
        """Every client and every node's copy hold the same text and the same structs: all
        updates come from clients, which hold their own, so nothing is still in flight."""
        copies = [client.doc for client in self.clients] + [
            room.doc for node in self.nodes for room in node.engine._rooms.values()
        ]
        texts = {str(doc.get("content", type=Text)) for doc in copies}
        states = {tuple(sorted(state_vector(doc.get_state()).items())) for doc in copies}
        return len(texts) == 1 and len(states) == 1

    async def edit(self, client: FakeClient, change: Any) -> None:
        update = client.local(change)
        if client.connected and len(update) > 2:
            await client.node.engine.update(client.conn, "d1", update)


async def scenario(steps: list[tuple[Any, ...]], template: Path) -> None:
    # A "crashed" node's engine is simply abandoned in this process: its SQLite connections
    # are left to the garbage collector and may still touch the folder as it is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "tandem.db"
        shutil.copy(template, path)
        db = Database(f"sqlite+aiosqlite:///{path}")
        store = SqlDocumentStore(db)
        await create(store, content="seed")
        world = World(store, MemoryExchange(), [None] * NODES, [])  # type: ignore[list-item]
        try:
            for n in range(NODES):
                await world.start(n)
            world.clients = [world.nodes[i % NODES].client(f"u{i}") for i in range(CLIENTS)]
            for client in world.clients:
                await client.join()
            for step in steps:
                await world.run(step)
            # Everyone comes back; a lost message is healed by the state-vector exchange.
            for node in world.nodes:
                node.bus.drop.clear()
            for i, client in enumerate(world.clients):
                if not client.connected:
                    client.node = world.nodes[i % NODES]
                    await client.join()
            for node in world.nodes:
                await node.engine.on_bus_reconnect()
            await eventually(world.settled, what="clients and nodes converge")
            final = world.clients[0].text
            for n in range(NODES):
                await world.stop(n, graceful=True)
            stored = await stored_text(store)
            assert stored == final, (stored, final)
        finally:
            await db.dispose()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(op, min_size=1, max_size=30))
def test_every_interleaving_converges(steps: list[tuple[Any, ...]], template: Path) -> None:
    asyncio.run(scenario(steps, template))
