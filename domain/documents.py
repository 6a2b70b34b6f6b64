"""Collaborative documents: who may read or edit them, and the store of their CRDT state.

A document is a Yjs CRDT edited by many clients at once (the engine lives in
``realtime.collab``). Here is what is independent of the CRDT itself:

- ``Document``: its id, ``format`` (what its ``content`` root is), owner, members with roles,
  and the ``epoch``: a fresh value whenever the document's Yjs history starts over (it was
  deleted and created again). A client that synced under another epoch must drop its copy
  instead of merging, or content would double.
- ``DocumentStore``: the persisted state, an append-only log of raw Yjs updates on top of a
  compacted snapshot, plus named versions. The bytes are opaque here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from domain.errors import InvalidPayload

DOC_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,127}"
_DOC_ID = re.compile(DOC_ID_PATTERN)
DOC_PREFIX = "doc:"


class DocFormat(StrEnum):
    """What the ``content`` root of a document's Y.Doc is."""

    TEXT = "text"  # Y.Text: code and plain-text editors (CodeMirror + y-codemirror.next)
    RICH = "rich"  # Y.XmlFragment: rich-text editors (ProseMirror/Tiptap, field "content")


class Role(StrEnum):
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_edit(self) -> bool:
        return self is Role.EDITOR


def strongest(*roles: Role | None) -> Role | None:
    if Role.EDITOR in roles:
        return Role.EDITOR
    return Role.VIEWER if Role.VIEWER in roles else None


def doc_id_of(name: object) -> str:
    """A document id from ``"<id>"`` or the channel-style ``"doc:<id>"``."""
    if not isinstance(name, str):
        raise InvalidPayload("doc must be a string: a document id like 'notes-1'")
    doc_id = name.removeprefix(DOC_PREFIX)
    if not _DOC_ID.fullmatch(doc_id):
        raise InvalidPayload(
            f"invalid document id {doc_id[:64]!r}: 1-128 characters of letters, digits and "
            "_.@=+-, starting with a letter or digit"
        )
    return doc_id


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    format: DocFormat
    epoch: str
    owner: str | None
    created_at: datetime
    members: Mapping[str, Role] = field(default_factory=dict)

    def role_of(self, user: str) -> Role | None:
        """The owner edits; members have their role; anyone else has none."""
        if self.owner is not None and user == self.owner:
            return Role.EDITOR
        return self.members.get(user)


@dataclass(frozen=True, slots=True)
class StoredState:
    """A document's persisted Yjs state: the snapshot and the log rows after it, in order."""

    epoch: str
    snapshot: bytes | None
    updates: Sequence[bytes]

    @property
    def size(self) -> int:
        return len(self.snapshot or b"") + sum(len(u) for u in self.updates)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One raw Yjs update a node received from one of its own clients."""

    doc_id: str
    epoch: str
    update: bytes


@dataclass(frozen=True, slots=True)
class Compaction:
    rows: int  # log rows folded (and deleted)
    bytes: int  # their size
    snapshot_bytes: int


@dataclass(frozen=True, slots=True)
class Version:
    """A named copy of a document's whole Yjs state at one moment."""

    id: int
    doc_id: str
    name: str
    created_at: datetime
    created_by: str | None
    size: int


# Folds a snapshot and the updates after it into one Yjs state (the CRDT engine's job).
Fold = Callable[[bytes | None, Sequence[bytes]], bytes]


class DocumentStore(Protocol):
    """Documents, their members, and their Yjs state (SQLite and PostgreSQL alike).

    The log is append-only and its rows carry the epoch they were written under: rows of
    another epoch are never returned (a node that had not yet heard of a reset may still
    write some) and go at the next compaction.
    """

    async def create(self, doc: Document, state: bytes | None) -> None:
        """Store a new document, with an initial snapshot when ``state`` is given.

        Raises:
            Conflict: a document with this id exists.
        """
        ...

    async def get(self, doc_id: str) -> Document | None: ...

    async def delete(self, doc_id: str) -> bool:
        """Delete the document with its members, state and versions; False if none."""
        ...

    async def set_member(self, doc_id: str, user: str, role: Role) -> None:
        """Raises NotFound when there is no such document."""
        ...

    async def remove_member(self, doc_id: str, user: str) -> bool: ...

    async def load(self, doc_id: str) -> StoredState | None:
        """The snapshot and the log rows of the current epoch, or None without a document."""
        ...

    async def append(self, entries: Sequence[LogEntry]) -> set[str]:
        """Append every entry in one transaction, except those of documents that were deleted
        or started over under another epoch meanwhile: those are dropped, and their ids
        returned (whoever holds them open holds a copy nobody can store any more).

        Raises:
            Unavailable: the database cannot be reached; nothing was written.
        """
        ...

    async def compact(self, doc_id: str, fold: Fold) -> Compaction | None:
        """Fold the snapshot and the current log into a new snapshot and delete the folded
        rows, built from what the database holds (never from one node's memory). Rows
        appended meanwhile are kept. None when there was nothing to fold or another
        compaction got there first."""
        ...

    async def save_version(
        self, doc_id: str, name: str, state: bytes, created_by: str | None
    ) -> Version: ...

    async def versions(self, doc_id: str) -> list[Version]: ...

    async def version(self, doc_id: str, version_id: int) -> tuple[Version, bytes] | None: ...
