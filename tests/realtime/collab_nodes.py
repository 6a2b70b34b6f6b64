"""Several CollabEngines in one process: nodes sharing a memory bus exchange and one store,
with fake connections holding pycrdt documents (what a client does, minus the socket)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pycrdt import Awareness, Doc, Text

from domain.documents import DocFormat, Document, DocumentStore, Role
from realtime.collab.bus import BusKind, BusMessage, MemoryDocBus, MemoryExchange, MessageHandler
from realtime.collab.engine import CollabEngine, CollabOptions

DOC = "d1"
_ids = itertools.count(1)


class LossyBus(MemoryDocBus):
    """A memory bus that can lose the next messages it publishes (as Redis pub/sub may)."""

    def __init__(self, node_id: str, handler: MessageHandler, exchange: MemoryExchange) -> None:
        super().__init__(node_id, handler, exchange)
        self.drop: dict[BusKind, int] = {}  # how many of the next messages of a kind to lose
        self.sent: dict[BusKind, int] = dict.fromkeys(BusKind, 0)  # published, lost or not

    async def publish(self, message: BusMessage) -> None:
        self.sent[message.kind] += 1
        if self.drop.get(message.kind):
            self.drop[message.kind] -= 1
            return
        await super().publish(message)


@dataclass(eq=False)
class FakeClient:
    node: Node
    user: str
    role: Role = Role.EDITOR
    conn: str = field(default_factory=lambda: f"c{next(_ids)}")
    doc: Doc[Any] = field(default_factory=Doc)
    epoch: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    connected: bool = False

    def __post_init__(self) -> None:
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)

    @property
    def text(self) -> str:
        return str(self.doc.get("content", type=Text))

    async def join(self, doc_id: str = DOC, *, awareness: dict[str, Any] | None = None) -> Any:
        update = None
        if awareness is not None:
            self.awareness.set_local_state(awareness)
            update = self.awareness.encode_awareness_update([self.doc.client_id])
        self.node.clients[self.conn] = self
        self.connected = True
        answer = await self.node.engine.join(
            self.conn,
            self.user,
            doc_id,
            self.role,
            sv=self.doc.get_state(),
            epoch=self.epoch,
            awareness=update,
        )
        if answer.reset:
            self.doc = Doc()
            self.awareness = Awareness(self.doc)
            self.awareness.set_local_state(None)
        self.doc.apply_update(answer.update)
        self.awareness.apply_awareness_update(answer.awareness, "server")
        self.epoch = answer.epoch
        missing = self.doc.get_update(answer.sv)
        if self.role is Role.EDITOR and len(missing) > 2:
            await self.node.engine.update(self.conn, doc_id, missing)
        return answer

    async def type(self, value: str, at: int | None = None, doc_id: str = DOC) -> None:
        update = self.local(lambda text: text.insert(len(text) if at is None else at, value))
        if self.connected:
            await self.node.engine.update(self.conn, doc_id, update)

    def local(self, change: Callable[[Text], None]) -> bytes:
        """Edit the local copy only (as a client does while offline); returns the update."""
        before = self.doc.get_state()
        with self.doc.transaction():
            change(self.doc.get("content", type=Text))
        return self.doc.get_update(before)

    async def disconnect(self) -> None:
        self.connected = False
        self.node.clients.pop(self.conn, None)
        await self.node.engine.leave_all(self.conn)
        self.awareness = Awareness(self.doc)  # drop what we knew of the others
        self.awareness.set_local_state(None)

    def receive(self, event: str, payload: dict[str, Any]) -> None:
        self.events.append((event, payload))
        if event == "doc.update":
            self.doc.apply_update(payload["update"])
        elif event == "doc.awareness":
            self.awareness.apply_awareness_update(payload["update"], "server")

    def others(self) -> set[int]:
        return {c for c in self.awareness.states if c != self.doc.client_id}


@dataclass(eq=False)
class Node:
    engine: CollabEngine
    bus: LossyBus
    clients: dict[str, FakeClient] = field(default_factory=dict)

    def client(self, user: str = "alice", role: Role = Role.EDITOR) -> FakeClient:
        return FakeClient(self, user, role)


def node_engine(store: DocumentStore, exchange: MemoryExchange, name: str, **options: Any) -> Node:
    clients: dict[str, FakeClient] = {}
    buses: list[LossyBus] = []

    async def send(event: str, payload: dict[str, Any], conns: Collection[str]) -> None:
        for conn in list(conns):
            client = clients.get(conn)
            if client is not None:
                client.receive(event, payload)

    def bus(handler: MessageHandler, _reconnect: Callable[[], Awaitable[None]]) -> LossyBus:
        made = LossyBus(name, handler, exchange)
        buses.append(made)
        return made

    defaults: dict[str, Any] = {
        "flush_interval": 0.05,
        "unload_grace": 0.1,
        "reconcile_interval": 3600,
        "anti_entropy_interval": 3600,
        "initial_sync_timeout": 0.5,
    }
    engine = CollabEngine(store, bus, send, CollabOptions(node_id=name, **{**defaults, **options}))
    return Node(engine, buses[0], clients)


async def crash(node: Node) -> None:
    """Stop a node as SIGKILL would: what it had not flushed is gone, it says nothing more.

    In one process the store is shared with the survivors, so nothing is cut off in the
    middle of a transaction (a real crash ends those with the process and its connections):
    its buffers are dropped first, then its in-flight work finishes, then it falls silent.
    """
    engine = node.engine
    for room in engine._rooms.values():
        engine._keeper.discard(room)
        if room.unload_timer is not None:
            room.unload_timer.cancel()
    for loop in engine._loops:
        await loop.stop()  # a round under way finishes (the process would end it mid-way)
    await asyncio.gather(*engine._tasks, return_exceptions=True)
    await node.bus.__aexit__(None, None, None)


@asynccontextmanager
async def running(node: Node) -> AsyncIterator[Node]:
    async with node.engine:
        yield node


async def create(store: DocumentStore, doc_id: str = DOC, content: str | None = None) -> None:
    from realtime.collab import crdt

    document = Document(doc_id, DocFormat.TEXT, "epoch-1", None, datetime.now(UTC))
    await store.create(document, crdt.initial_state(DocFormat.TEXT, content) if content else None)


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def stored_text(store: DocumentStore, doc_id: str = DOC) -> str:
    from realtime.collab import crdt

    state = await store.load(doc_id)
    assert state is not None
    return str(crdt.doc_from(state.snapshot, state.updates).get("content", type=Text))
