"""The Yjs helpers: content of each format, restores as edits, changes and redundancy."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText

from domain.documents import DocFormat
from realtime.collab import crdt


def rich_doc() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    fragment = doc.get("content", type=XmlFragment)
    heading = fragment.children.append(XmlElement("heading", {"level": "1"}))
    heading.children.append(XmlText("Title"))
    paragraph = fragment.children.append(XmlElement("paragraph"))
    text = paragraph.children.append(XmlText("plain "))
    text.insert(len(text), "bold", {"bold": True})
    return doc


def test_a_rich_version_is_restored_as_an_edit_with_its_structure_and_marks() -> None:
    version = rich_doc()
    live: Doc[Any] = Doc()
    live.apply_update(version.get_update())
    live.get("content", type=XmlFragment).children.append(XmlElement("paragraph"))
    peer: Doc[Any] = Doc()
    peer.apply_update(live.get_update())
    update = crdt.edit_of(
        live.get_update(), lambda copy: crdt.replace_content(copy, version, DocFormat.RICH)
    )
    peer.apply_update(update)  # a client holding the live state converges, nothing doubled
    assert str(peer.get("content", type=XmlFragment)) == str(
        version.get("content", type=XmlFragment)
    )
    assert crdt.text_of(peer.get_update(), DocFormat.RICH).count("Title") == 1
    assert "<bold>bold</bold>" in crdt.text_of(peer.get_update(), DocFormat.RICH)


def test_a_text_version_keeps_its_formatting_when_restored() -> None:
    version: Doc[Any] = Doc()
    text = version.get("content", type=Text)
    text.insert(0, "plain ")
    text.insert(6, "bold", {"bold": True})
    live = crdt.doc_from(crdt.initial_state(DocFormat.TEXT, "something else"))
    update = crdt.edit_of(
        live.get_update(), lambda copy: crdt.replace_content(copy, version, DocFormat.TEXT)
    )
    live.apply_update(update)
    assert live.get("content", type=Text).diff() == [("plain ", None), ("bold", {"bold": True})]


def test_set_text_touches_only_what_differs() -> None:
    doc = crdt.doc_from(crdt.initial_state(DocFormat.TEXT, "Hello brave new world"))
    text = doc.get("content", type=Text)
    before = doc.get_state()
    crdt.set_text(text, "Hello new world")
    assert str(text) == "Hello new world"
    change = doc.get_update(before)
    assert b"new" not in change and len(change) < 20  # "brave " deleted, nothing inserted


def test_redundant_tells_an_update_that_integrated_nothing_from_one_that_waits() -> None:
    doc = crdt.doc_from(crdt.initial_state(DocFormat.TEXT, "abc"))
    assert crdt.redundant(doc, doc.get_update())  # all of it here already
    other = crdt.doc_from(doc.get_update())
    text = other.get("content", type=Text)
    before = other.get_state()
    text.insert(3, "d")
    insert = other.get_update(before)
    del text[3]
    delete_only = other.get_update(other.get_state())  # the delete set alone
    # Applied before the insert it deletes, the deletion integrates nothing but must wait.
    assert not crdt.changes(doc, delete_only)
    assert not crdt.redundant(doc, delete_only)
    assert crdt.changes(doc, insert) and not crdt.changes(doc, insert)  # a duplicate: no
    assert crdt.redundant(doc, insert) and str(doc.get("content", type=Text)) == "abc"
