"""The CollabEngine with nodes in one process: a memory bus exchange between them and one
SQLite store, fake connections holding their own pycrdt documents."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from domain.documents import LogEntry, Role
from domain.errors import InvalidPayload, NotFound, PayloadTooLarge, PermissionDenied
from realtime.collab.bus import BusKind, MemoryExchange
from storage.database import Database
from storage.documents import SqlDocumentStore
from tests.realtime.collab_nodes import (
    DOC,
    crash,
    create,
    eventually,
    node_engine,
    running,
    stored_text,
)


@pytest.fixture
def database_path(template: Path, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tandem.db"
    shutil.copy(template, path)
    yield path


class CountingStore(SqlDocumentStore):
    """The real store, counting calls; ``append`` may be made slow or failing."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.loads = 0
        self.appends: list[int] = []
        self.append_delay = 0.0
        self.fail_appends = False

    async def load(self, doc_id: str) -> Any:
        self.loads += 1
        return await super().load(doc_id)

    async def append(self, entries: Sequence[LogEntry]) -> set[str]:
        if self.append_delay:
            await asyncio.sleep(self.append_delay)
        if self.fail_appends:
            raise ConnectionError("the store is down")
        self.appends.append(len(entries))
        return await super().append(entries)


@pytest.fixture
async def store(database_path: Path) -> AsyncIterator[CountingStore]:
    db = Database(f"sqlite+aiosqlite:///{database_path}")
    store = CountingStore(db)
    await create(store)
    yield store
    await db.dispose()


@pytest.fixture
def exchange() -> MemoryExchange:
    return MemoryExchange()


# -- one node ---------------------------------------------------------------------------------


async def test_editors_on_one_node_converge_and_never_get_their_own_update(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a")) as node:
        alice, bob = node.client("alice"), node.client("bob")
        await alice.join()
        await bob.join()
        await alice.type("hello")
        await bob.type("!", at=0)
        await eventually(lambda: alice.text == bob.text == "!hello", what="converged")
        assert all(event == "doc.update" for event, _ in alice.events)
        assert len(alice.events) == 1 and len(bob.events) == 1  # each got only the other's
    assert await stored_text(store) == "!hello"  # flushed on the way out


async def test_loading_is_single_flight(store: CountingStore, exchange: MemoryExchange) -> None:
    async with running(node_engine(store, exchange, "a")) as node:
        clients = [node.client(f"u{i}") for i in range(20)]
        await asyncio.gather(*(client.join() for client in clients))
        assert store.loads == 1
        assert node.engine.open_documents == 1


async def test_unknown_documents_and_bad_requests_change_nothing(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a", max_doc_bytes=4096)) as node:
        with pytest.raises(NotFound):
            await node.client().join("nope")
        alice, viewer = node.client("alice"), node.client("vic", Role.VIEWER)
        await alice.join()
        await viewer.join()
        await alice.type("abc")
        with pytest.raises(PermissionDenied):
            await viewer.type("x")
        with pytest.raises(InvalidPayload):
            await node.engine.update(alice.conn, DOC, b"\x01\x02garbage")
        with pytest.raises(InvalidPayload):
            await node.engine.sync(alice.conn, DOC, b"\xff\xff")
        with pytest.raises(PayloadTooLarge):
            await alice.type("x" * 5000)
        with pytest.raises(NotFound):  # not joined
            await node.engine.update("stranger", DOC, b"\x00\x00")
        # Refused updates changed only the senders' own copies.
        assert viewer.text == "abcx" and node.engine.stats.invalid == 1
    assert await stored_text(store) == "abc"


async def test_log_writes_are_batched(store: CountingStore, exchange: MemoryExchange) -> None:
    async with running(node_engine(store, exchange, "a", flush_interval=0.2)) as node:
        alice = node.client()
        await alice.join()
        for char in "batched typing!" * 10:
            await alice.type(char)
        await eventually(lambda: sum(store.appends) == 150)
    assert len(store.appends) <= 5, store.appends


async def test_updates_wait_in_memory_while_the_store_is_down(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a", flush_interval=0.05)) as node:
        alice = node.client()
        await alice.join()
        store.fail_appends = True
        await alice.type("kept")
        await eventually(lambda: node.engine.stats.flush_failures >= 2)
        store.fail_appends = False
        await eventually(lambda: sum(store.appends) == 1, what="flushed after the outage")
    assert await stored_text(store) == "kept"


async def test_unload_after_the_grace_keeps_everything(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a", unload_grace=0.05)) as node:
        alice = node.client()
        await alice.join()
        await alice.type("persisted")
        await alice.disconnect()
        await eventually(lambda: node.engine.open_documents == 0, what="unloaded")
        again = node.client("bob")
        await again.join()
        assert again.text == "persisted" and store.loads == 2
        assert await stored_text(store) == "persisted"


async def test_an_unloaded_document_is_freed(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a", unload_grace=0.0)) as node:
        alice = node.client()
        await alice.join(awareness={"user": {"name": "Alice"}})
        await alice.type("x")
        room = weakref.ref(node.engine._rooms[DOC])
        await alice.disconnect()
        await eventually(lambda: node.engine.stats.unloads == 1)
        gc.collect()
        assert room() is None  # nothing (a Yrs callback above all) keeps it alive


async def test_a_join_during_an_unload_waits_for_it_and_loads_again(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a", unload_grace=0.0)) as node:
        alice = node.client()
        await alice.join()
        await alice.type("before")
        store.append_delay = 0.3  # the unload's flush takes a while
        await alice.disconnect()
        await eventually(lambda: DOC in node.engine._unloading, what="unloading")
        bob = node.client("bob")
        await bob.join()
        assert bob.text == "before" and node.engine.open_documents == 1
        store.append_delay = 0
        await bob.type(" after")
    assert await stored_text(store) == "before after"


async def test_a_documents_size_cap_is_kept(store: CountingStore, exchange: MemoryExchange) -> None:
    async with running(node_engine(store, exchange, "a", max_doc_bytes=2000)) as node:
        alice = node.client()
        await alice.join()
        accepted = 0
        with pytest.raises(PayloadTooLarge):
            for _ in range(40):
                await alice.type("x" * 100)
                accepted += 1
        assert 0 < accepted < 40
    # The refused update was never applied: the store has exactly what was accepted.
    assert await stored_text(store) == "x" * 100 * accepted


async def test_compaction_under_concurrent_editing(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    options = {"compact_after_rows": 20, "flush_interval": 0.01}
    async with running(node_engine(store, exchange, "a", **options)) as node:
        alice, bob = node.client("alice"), node.client("bob")
        await alice.join()
        await bob.join()
        for i in range(60):
            await alice.type("a")
            await bob.type("b", at=0)
            if i % 10 == 0:
                await asyncio.sleep(0.02)  # let flushes and compactions run
        await eventually(lambda: alice.text == bob.text and len(alice.text) == 120)
        await eventually(lambda: node.engine.stats.compactions >= 2, what="compacted")
        final = alice.text
    state = await store.load(DOC)
    assert state is not None and state.snapshot is not None
    assert await stored_text(store) == final


async def test_a_reset_epoch_makes_the_client_start_over(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a")) as node:
        alice = node.client()
        await alice.join()
        await alice.type("current")
        stale = node.client("bob")
        stale.epoch = "an-older-epoch"
        stale.local(lambda text: text.insert(0, "from another life "))
        answer = await stale.join()
        assert answer.reset and stale.text == "current"


async def test_access_changes_and_deletion_reach_members_on_every_node(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a")) as a,
        running(node_engine(store, exchange, "b")) as b,
    ):
        alice, bob, carol = a.client("alice"), b.client("bob"), b.client("carol")
        for client in (alice, bob, carol):
            await client.join()
        granted = b.client("gina")
        granted.node.clients[granted.conn] = granted
        granted.connected = True
        await b.engine.join(
            granted.conn,
            "gina",
            DOC,
            Role.EDITOR,
            sv=None,
            epoch=None,
            awareness=None,
            granted=Role.EDITOR,
        )
        # Lowered to viewer: refused from the next update on, without being closed.
        await a.engine.access_changed(DOC, "carol", Role.VIEWER)
        roles = lambda: {m.user: m.role for m in b.engine.members_of(DOC)}  # noqa: E731
        await eventually(lambda: roles()["carol"] is Role.VIEWER)
        with pytest.raises(PermissionDenied):
            await carol.type("x")
        # Removed: closed; but a token grant outlives a membership.
        await a.engine.access_changed(DOC, "bob", None)
        await a.engine.access_changed(DOC, "gina", None)
        await eventually(lambda: any(e == "doc.closed" for e, _ in bob.events))
        assert not any(e == "doc.closed" for e, _ in granted.events + carol.events)
        assert {m.user for m in b.engine.members_of(DOC)} == {"carol", "gina"}
        await a.engine.deleted(DOC)
        await eventually(lambda: any(e == "doc.closed" for e, _ in carol.events))
        await eventually(lambda: a.engine.open_documents == b.engine.open_documents == 0)
        assert dict(carol.events)["doc.closed"]["code"] == "not_found"


async def test_a_node_that_missed_a_deletion_closes_the_document_at_its_next_flush(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a")) as a,
        running(node_engine(store, exchange, "b")) as b,
    ):
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join()
        await bob.join()
        b.bus.drop[BusKind.ACCESS] = 1  # the news of the deletion never reaches A
        assert await store.delete(DOC)
        await b.engine.deleted(DOC)
        await alice.type("into the void")
        await eventually(lambda: any(e == "doc.closed" for e, _ in alice.events))
        assert a.engine.open_documents == 0


# -- awareness --------------------------------------------------------------------------------


async def test_awareness_is_relayed_owned_and_removed_when_its_connection_goes(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a")) as a,
        running(node_engine(store, exchange, "b")) as b,
    ):
        alice, bob, eve = a.client("alice"), b.client("bob"), a.client("eve")
        await alice.join(awareness={"user": {"name": "Alice"}, "cursor": None})
        await bob.join()
        await eve.join()
        await eventually(lambda: alice.doc.client_id in bob.others(), what="bob sees alice")
        assert eve.others() == {alice.doc.client_id}
        # Eve cannot speak for Alice's client id.
        forged = alice.awareness.encode_awareness_update([alice.doc.client_id])
        with pytest.raises(PermissionDenied):
            await a.engine.awareness(eve.conn, DOC, forged)
        with pytest.raises(InvalidPayload):
            await a.engine.awareness(eve.conn, DOC, b"\x05\x01")
        await alice.disconnect()
        await eventually(lambda: not bob.others() and not eve.others(), what="alice gone")


async def test_awareness_of_a_dead_node_expires_within_the_ttl(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    ttl = 0.6
    a = node_engine(store, exchange, "a", awareness_ttl=ttl)
    async with running(node_engine(store, exchange, "b", awareness_ttl=ttl)) as b:
        await a.engine.__aenter__()
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join(awareness={"user": {"name": "Alice"}})
        await bob.join(awareness={"user": {"name": "Bob"}})
        await eventually(lambda: alice.doc.client_id in bob.others())
        # Alive nodes renew: Alice stays while A lives. B announces its own clients every
        # ttl / 3, in the sweep that expires others, after expiring: four announcements later
        # a sweep has run more than a TTL after A's last renewal could have been missed.
        announced = b.bus.sent[BusKind.ALIVE]
        await eventually(lambda: b.bus.sent[BusKind.ALIVE] >= announced + 4, what="b swept")
        assert alice.doc.client_id in bob.others()
        await crash(a)
        started = asyncio.get_running_loop().time()
        await eventually(lambda: not bob.others(), timeout=ttl * 3, what="alice expired")
        assert asyncio.get_running_loop().time() - started <= ttl + 0.3


# -- several nodes ----------------------------------------------------------------------------


async def test_editors_on_different_nodes_converge(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a")) as a,
        running(node_engine(store, exchange, "b")) as b,
    ):
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join()
        await bob.join()
        await asyncio.gather(*(alice.type(c) for c in "abc"), *(bob.type(c, at=0) for c in "xyz"))
        await eventually(lambda: alice.text == bob.text and len(alice.text) == 6)


async def test_a_lost_bus_message_is_healed_by_anti_entropy(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a", anti_entropy_interval=0.2)) as a,
        running(node_engine(store, exchange, "b", anti_entropy_interval=0.2)) as b,
    ):
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join()
        await bob.join()
        await eventually(lambda: b.engine._rooms[DOC].synced.is_set(), what="b synced")
        a.bus.drop[BusKind.UPDATE] = 1
        await alice.type("lost then healed")
        assert a.bus.drop[BusKind.UPDATE] == 0  # it was lost on the way
        assert bob.text == ""
        await eventually(lambda: bob.text == "lost then healed", what="healed")
        assert b.engine.stats.remote_updates >= 1


async def test_a_node_loading_a_document_catches_up_from_its_peers(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    # A's updates are not flushed yet (a long flush interval): B can only get them from A.
    async with running(node_engine(store, exchange, "a", flush_interval=60)) as a:
        alice = a.client()
        await alice.join()
        await alice.type("only in A's memory")
        async with running(node_engine(store, exchange, "b")) as b:
            bob = b.client("bob")
            await bob.join()
            await eventually(lambda: bob.text == "only in A's memory", what="initial sync")


async def test_updates_of_a_crashed_node_are_kept_by_a_peer_reconcile(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    a = node_engine(store, exchange, "a", flush_interval=60)
    await a.engine.__aenter__()
    async with running(node_engine(store, exchange, "b", unload_grace=0.05)) as b:
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join()
        await bob.join()
        await alice.type("typed on A, never flushed")
        await eventually(lambda: bob.text == "typed on A, never flushed")
        await crash(a)  # its buffer is gone with it; alice never comes back
        await bob.disconnect()  # B unloads: it reconciles what the store lacks
        await eventually(lambda: b.engine.stats.unloads == 1, what="unloaded")
        assert b.engine.stats.repairs == 1
    assert await stored_text(store) == "typed on A, never flushed"


async def test_offline_edits_merge_when_the_client_comes_back_elsewhere(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with (
        running(node_engine(store, exchange, "a")) as a,
        running(node_engine(store, exchange, "b")) as b,
    ):
        alice, bob = a.client("alice"), b.client("bob")
        await alice.join()
        await bob.join()
        await alice.type("shared. ")
        await eventually(lambda: bob.text == "shared. ")
        await alice.disconnect()
        alice.local(lambda text: text.insert(len(text), "offline."))
        await bob.type("online. ")
        alice.node = b  # reconnects to the other node
        await alice.join()
        await eventually(lambda: alice.text == bob.text and "offline." in bob.text)
        assert bob.text.count("shared. ") == 1


async def test_an_update_that_brings_nothing_new_is_neither_stored_nor_relayed(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    async with running(node_engine(store, exchange, "a")) as node:
        alice, bob = node.client("alice"), node.client("bob")
        await alice.join()
        await bob.join()
        await alice.type("hello world")
        await node.engine.update(alice.conn, DOC, alice.local(lambda t: t.__delitem__(slice(0, 6))))
        await eventually(lambda: bob.text == "world" and sum(store.appends) == 2)
        bob.events.clear()
        for _ in range(3):  # each re-join pushes the whole delete set again
            await alice.disconnect()
            await alice.join()
        assert node.engine.stats.redundant == 3
        # A real change after them: its flush would carry anything of theirs still queued,
        # and its relay comes after anything of theirs relayed.
        await alice.type("!")
        await eventually(lambda: sum(store.appends) >= 3 and bob.text == "world!")
        assert sum(store.appends) == 3
        assert [event for event, _ in bob.events] == ["doc.update"]


async def test_updates_waiting_for_others_are_kept(
    store: CountingStore, exchange: MemoryExchange
) -> None:
    """An update that integrates nothing yet (it depends on structs, or deletes items, the
    node has not seen) is stored and relayed all the same."""
    async with running(node_engine(store, exchange, "a")) as node:
        alice, bob = node.client("alice"), node.client("bob")
        await alice.join()
        await bob.join()
        offline = node.client("carol")  # edits on its own, its updates sent out of order
        first = offline.local(lambda t: t.insert(0, "X"))
        second = offline.local(lambda t: t.insert(1, "Y"))
        third = offline.local(lambda t: t.__delitem__(0))
        for update in (third, second):
            await node.engine.update(alice.conn, DOC, update)
        await eventually(lambda: sum(store.appends) == 2, what="both stored")
        assert bob.text == "" and node.engine.stats.redundant == 0
        await node.engine.update(alice.conn, DOC, first)
        await eventually(lambda: bob.text == "Y", what="released in order")
    assert await stored_text(store) == "Y"
