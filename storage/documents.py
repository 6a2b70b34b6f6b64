"""SqlDocumentStore: documents, members, the Yjs update log, snapshots and versions.

The log is append-only and written in batches (a node flushes every few hundred
milliseconds, never a commit per keystroke). Compaction folds the snapshot and the log into a
new snapshot in two short transactions with the fold in between, off the event loop:

1. read the snapshot and the log rows after it (ids up to N);
2. fold them (a thread, through the injected ``Fold``);
3. lock the document's row, check that nobody compacted meanwhile and that no row at or
   below N committed late (on PostgreSQL an id is taken at insert, so a slow transaction can
   commit a lower id after a faster one), write the snapshot, delete the folded rows.

Appenders hold a share lock on the documents' rows for their transaction, so step 3 waits
for appends in flight instead of racing them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from domain.documents import (
    Compaction,
    DocFormat,
    Document,
    Fold,
    LogEntry,
    Role,
    StoredState,
    Version,
)
from domain.errors import Conflict, NotFound
from storage.database import Database
from storage.tables import (
    Base,
    DocSnapshotRow,
    DocumentMemberRow,
    DocumentRow,
    DocUpdateRow,
    DocVersionRow,
)

_DOCS = Base.metadata.tables[DocumentRow.__tablename__]
_MEMBERS = Base.metadata.tables[DocumentMemberRow.__tablename__]
_SNAPSHOTS = Base.metadata.tables[DocSnapshotRow.__tablename__]
_LOG = Base.metadata.tables[DocUpdateRow.__tablename__]
_VERSIONS = Base.metadata.tables[DocVersionRow.__tablename__]


class SqlDocumentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- documents and members --------------------------------------------------------------

    async def create(self, doc: Document, state: bytes | None) -> None:
        now = datetime.now(UTC)
        try:
            async with self._db.transaction() as session:
                await session.execute(
                    insert(_DOCS).values(
                        id=doc.id,
                        format=doc.format.value,
                        epoch=doc.epoch,
                        owner=doc.owner,
                        created_at=doc.created_at,
                    )
                )
                await session.execute(
                    insert(_SNAPSHOTS).values(doc_id=doc.id, state=state, upto_id=0, updated_at=now)
                )
                if doc.members:
                    await session.execute(
                        insert(_MEMBERS),
                        [
                            {"doc_id": doc.id, "user": user, "role": role.value}
                            for user, role in doc.members.items()
                        ],
                    )
        except IntegrityError:
            raise Conflict(f"a document with id {doc.id!r} already exists") from None

    async def get(self, doc_id: str) -> Document | None:
        async with self._db.transaction() as session:
            row = (await session.execute(select(_DOCS).where(_DOCS.c.id == doc_id))).first()
            if row is None:
                return None
            members = await session.execute(
                select(_MEMBERS.c.user, _MEMBERS.c.role).where(_MEMBERS.c.doc_id == doc_id)
            )
            return _to_document(row, {user: Role(role) for user, role in members})

    async def delete(self, doc_id: str) -> bool:
        async with self._db.transaction() as session:
            # Children first: SQLite enforces the cascade only with foreign keys on, and the
            # log can be long, so its rows go in one statement either way.
            for table in (_LOG, _VERSIONS, _SNAPSHOTS, _MEMBERS):
                await session.execute(delete(table).where(table.c.doc_id == doc_id))
            result = await session.execute(delete(_DOCS).where(_DOCS.c.id == doc_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_member(self, doc_id: str, user: str, role: Role) -> None:
        async with self._db.transaction() as session:
            await self._require(session, doc_id)
            changed = await session.execute(
                update(_MEMBERS)
                .where(_MEMBERS.c.doc_id == doc_id, _MEMBERS.c.user == user)
                .values(role=role.value)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                await session.execute(
                    insert(_MEMBERS).values(doc_id=doc_id, user=user, role=role.value)
                )

    async def remove_member(self, doc_id: str, user: str) -> bool:
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(_MEMBERS).where(_MEMBERS.c.doc_id == doc_id, _MEMBERS.c.user == user)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- the Yjs state ----------------------------------------------------------------------

    async def load(self, doc_id: str) -> StoredState | None:
        async with self._db.transaction() as session:
            found = await _state_rows(session, doc_id)
        if found is None:
            return None
        epoch, snapshot, _upto, rows = found
        return StoredState(epoch, snapshot, [bytes(row.update) for row in rows])

    async def append(self, entries: Sequence[LogEntry]) -> set[str]:
        if not entries:
            return set()
        now = datetime.now(UTC)
        doc_ids = sorted({entry.doc_id for entry in entries})
        async with self._db.transaction() as session:
            # A share lock on each document row (in id order: no lock cycles between nodes)
            # keeps compaction from deciding while these rows are uncommitted.
            statement = (
                select(_DOCS.c.id, _DOCS.c.epoch)
                .where(_DOCS.c.id.in_(doc_ids))
                .order_by(_DOCS.c.id)
            )
            if self._db.postgres:
                statement = statement.with_for_update(read=True)
            epochs: dict[str, str] = {
                doc_id: epoch for doc_id, epoch in await session.execute(statement)
            }
            rows = [
                {"doc_id": e.doc_id, "epoch": e.epoch, "update": e.update, "created_at": now}
                for e in entries
                if epochs.get(e.doc_id) == e.epoch
            ]
            if rows:
                await session.execute(insert(_LOG), rows)
        return {e.doc_id for e in entries if epochs.get(e.doc_id) != e.epoch}

    async def compact(self, doc_id: str, fold: Fold) -> Compaction | None:
        async with self._db.transaction() as session:
            found = await _state_rows(session, doc_id)
        if found is None or not found[3]:
            return None
        epoch, snapshot, upto, rows = found
        last = rows[-1].id
        state = await asyncio.to_thread(fold, snapshot, [bytes(row.update) for row in rows])
        async with self._db.transaction() as session:
            locked = select(_DOCS.c.epoch).where(_DOCS.c.id == doc_id)
            if self._db.postgres:
                locked = locked.with_for_update()
            current_epoch = await session.scalar(locked)
            current_upto = await session.scalar(
                select(_SNAPSHOTS.c.upto_id).where(_SNAPSHOTS.c.doc_id == doc_id)
            )
            if current_epoch != epoch or current_upto != upto:
                return None  # deleted, re-created, or compacted by another node meanwhile
            folded = await session.scalar(
                select(func.count())
                .select_from(_LOG)
                .where(
                    _LOG.c.doc_id == doc_id,
                    _LOG.c.epoch == epoch,
                    _LOG.c.id > upto,
                    _LOG.c.id <= last,
                )
            )
            if folded != len(rows):
                return None  # a row at or below `last` committed late: fold it next time
            await session.execute(
                update(_SNAPSHOTS)
                .where(_SNAPSHOTS.c.doc_id == doc_id)
                .values(state=state, upto_id=last, updated_at=datetime.now(UTC))
            )
            # Rows of older epochs go too: nothing reads them.
            await session.execute(delete(_LOG).where(_LOG.c.doc_id == doc_id, _LOG.c.id <= last))
        folded_bytes = sum(len(row.update) for row in rows)
        return Compaction(rows=len(rows), bytes=folded_bytes, snapshot_bytes=len(state))

    # -- versions ---------------------------------------------------------------------------

    async def save_version(
        self, doc_id: str, name: str, state: bytes, created_by: str | None
    ) -> Version:
        now = datetime.now(UTC)
        async with self._db.transaction() as session:
            await self._require(session, doc_id)
            result = await session.execute(
                insert(_VERSIONS)
                .values(
                    doc_id=doc_id,
                    name=name,
                    state=state,
                    size=len(state),
                    created_by=created_by,
                    created_at=now,
                )
                .returning(_VERSIONS.c.id)
            )
            version_id = int(result.scalar_one())
        return Version(version_id, doc_id, name, now, created_by, len(state))

    async def versions(self, doc_id: str) -> list[Version]:
        columns = [c for c in _VERSIONS.c if c.name != "state"]
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(*columns).where(_VERSIONS.c.doc_id == doc_id).order_by(_VERSIONS.c.id)
            )
            return [_to_version(row) for row in rows]

    async def version(self, doc_id: str, version_id: int) -> tuple[Version, bytes] | None:
        async with self._db.transaction() as session:
            row = (
                await session.execute(
                    select(_VERSIONS).where(
                        _VERSIONS.c.doc_id == doc_id, _VERSIONS.c.id == version_id
                    )
                )
            ).first()
        return None if row is None else (_to_version(row), bytes(row.state))

    @staticmethod
    async def _require(session: Any, doc_id: str) -> None:
        if await session.scalar(select(_DOCS.c.id).where(_DOCS.c.id == doc_id)) is None:
            raise NotFound(f"no document {doc_id!r}")


async def _state_rows(
    session: Any, doc_id: str
) -> tuple[str, bytes | None, int, list[Row[Any]]] | None:
    """The epoch, snapshot, the last folded id and the log rows after it, of one document."""
    head = (
        await session.execute(
            select(_DOCS.c.epoch, _SNAPSHOTS.c.state, _SNAPSHOTS.c.upto_id)
            .select_from(_DOCS.outerjoin(_SNAPSHOTS, _SNAPSHOTS.c.doc_id == _DOCS.c.id))
            .where(_DOCS.c.id == doc_id)
        )
    ).first()
    if head is None:
        return None
    epoch, snapshot, upto = head.epoch, head.state, head.upto_id or 0
    rows = list(
        await session.execute(
            select(_LOG.c.id, _LOG.c.update)
            .where(_LOG.c.doc_id == doc_id, _LOG.c.epoch == epoch, _LOG.c.id > upto)
            .order_by(_LOG.c.id)
        )
    )
    return epoch, None if snapshot is None else bytes(snapshot), upto, rows


def _to_document(row: Row[Any], members: dict[str, Role]) -> Document:
    created = row.created_at
    return Document(
        id=row.id,
        format=DocFormat(row.format),
        epoch=row.epoch,
        owner=row.owner,
        created_at=created if created.tzinfo is not None else created.replace(tzinfo=UTC),
        members=members,
    )


def _to_version(row: Row[Any]) -> Version:
    created = row.created_at
    return Version(
        id=int(row.id),
        doc_id=row.doc_id,
        name=row.name,
        created_at=created if created.tzinfo is not None else created.replace(tzinfo=UTC),
        created_by=row.created_by,
        size=int(row.size),
    )
