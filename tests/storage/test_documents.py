"""SqlDocumentStore on SQLite and PostgreSQL: documents, members, the update log, compaction
and versions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pycrdt import Doc, Text

from domain.documents import DocFormat, Document, LogEntry, Role
from domain.errors import Conflict, NotFound
from realtime.collab import crdt
from storage.database import Database
from storage.documents import SqlDocumentStore


def document(doc_id: str = "d1", epoch: str = "e1", **fields: Any) -> Document:
    return Document(
        id=doc_id,
        format=DocFormat.TEXT,
        epoch=epoch,
        owner=fields.pop("owner", "alice"),
        created_at=datetime.now(UTC),
        **fields,
    )


def typing(text: str) -> list[bytes]:
    """One update per character, as a typist makes them."""
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    content = doc.get("content", type=Text)
    for char in text:
        content += char
    return updates


def text_of(state: Any) -> str:
    return str(crdt.doc_from(state.snapshot, state.updates).get("content", type=Text))


async def test_documents_and_members(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(members={"bob": Role.VIEWER}), None)
    with pytest.raises(Conflict):
        await store.create(document(), None)
    await store.set_member("d1", "carol", Role.EDITOR)
    await store.set_member("d1", "bob", Role.EDITOR)
    found = await store.get("d1")
    assert found is not None and found.owner == "alice" and found.epoch == "e1"
    assert dict(found.members) == {"bob": Role.EDITOR, "carol": Role.EDITOR}
    assert found.role_of("alice") is Role.EDITOR and found.role_of("dave") is None
    assert await store.remove_member("d1", "bob") and not await store.remove_member("d1", "bob")
    with pytest.raises(NotFound):
        await store.set_member("nope", "bob", Role.VIEWER)
    assert await store.get("nope") is None and await store.load("nope") is None


async def test_the_log_holds_what_was_appended_in_order(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(), crdt.initial_state(DocFormat.TEXT, "Hi "))
    updates = typing("hello")
    await store.append([LogEntry("d1", "e1", u) for u in updates])
    state = await store.load("d1")
    assert state is not None and len(state.updates) == 5 and state.epoch == "e1"
    assert state.updates == updates
    assert "hello" in text_of(state) and "Hi" in text_of(state)


async def test_entries_of_other_epochs_or_deleted_documents_are_never_read(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(), None)
    stale, fresh = typing("old"), typing("new")
    # A node behind a reset, or holding a deleted document, is told which were dropped.
    assert await store.append([LogEntry("d1", "e0", u) for u in stale]) == {"d1"}
    assert await store.append([LogEntry("d1", "e1", u) for u in fresh]) == set()
    mixed = [LogEntry("gone", "e1", fresh[0]), LogEntry("d1", "e1", fresh[0])]
    assert await store.append(mixed) == {"gone"}
    state = await store.load("d1")
    assert state is not None and text_of(state) == "new"


async def test_compaction_folds_the_log_into_the_snapshot(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(), None)
    await store.append([LogEntry("d1", "e1", u) for u in typing("compact me")])
    result = await store.compact("d1", crdt.fold)
    assert result is not None and result.rows == 10
    state = await store.load("d1")
    assert state is not None and state.updates == [] and state.snapshot is not None
    assert text_of(state) == "compact me"
    assert await store.compact("d1", crdt.fold) is None  # nothing left to fold
    # Rows appended after a compaction that emptied the log are read (ids are never reused).
    doc = crdt.doc_from(state.snapshot)
    before = doc.get_state()
    doc.get("content", type=Text).insert(0, ">> ")
    await store.append([LogEntry("d1", "e1", doc.get_update(before))])
    after = await store.load("d1")
    assert after is not None and len(after.updates) == 1 and text_of(after) == ">> compact me"


async def test_rows_appended_during_a_compaction_are_kept(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(), None)
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("content", type=Text)
    text += "first"
    await store.append([LogEntry("d1", "e1", u) for u in updates])
    appended = asyncio.Event()

    def slow_fold(snapshot: bytes | None, log: Any) -> bytes:
        # Another node appends while this one folds (in its thread).
        future = asyncio.run_coroutine_threadsafe(late_append(), loop)
        future.result(10)
        return crdt.fold(snapshot, log)

    async def late_append() -> None:
        updates.clear()
        text.insert(len(text), " second")
        await store.append([LogEntry("d1", "e1", u) for u in updates])
        appended.set()

    loop = asyncio.get_running_loop()
    result = await store.compact("d1", slow_fold)
    assert appended.is_set() and result is not None and result.rows == 1
    state = await store.load("d1")
    assert state is not None and len(state.updates) == 1
    assert text_of(state) == "first second"


async def test_versions_keep_whole_states(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(), None)
    state = crdt.initial_state(DocFormat.TEXT, "version one")
    saved = await store.save_version("d1", "v1", state, "alice")
    await store.save_version("d1", "v2", crdt.initial_state(DocFormat.TEXT, "two"), None)
    listed = await store.versions("d1")
    assert [(v.name, v.created_by) for v in listed] == [("v1", "alice"), ("v2", None)]
    found = await store.version("d1", saved.id)
    assert found is not None and found[1] == state and found[0].size == len(state)
    assert await store.version("d1", 999) is None
    with pytest.raises(NotFound):
        await store.save_version("nope", "v", state, None)


async def test_delete_takes_everything_with_it(db: Database) -> None:
    store = SqlDocumentStore(db)
    await store.create(document(members={"bob": Role.EDITOR}), None)
    await store.append([LogEntry("d1", "e1", u) for u in typing("bye")])
    await store.save_version("d1", "v", b"\x00\x00", None)
    assert await store.delete("d1") and not await store.delete("d1")
    assert await store.get("d1") is None and await store.versions("d1") == []
    await store.create(document(epoch="e2"), None)  # the id is free again, a new epoch
    state = await store.load("d1")
    assert state is not None and state.epoch == "e2" and state.updates == []
