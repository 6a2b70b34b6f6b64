"""Collaborative documents: members, the Yjs update log, snapshots and named versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _doc_id(primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "doc_id",
        sa.String(128),
        sa.ForeignKey("documents.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "document_members",
        _doc_id(primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
    )
    op.create_table(
        "doc_snapshots",
        _doc_id(primary_key=True),
        sa.Column("state", sa.LargeBinary(), nullable=True),
        sa.Column("upto_id", _ID, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "doc_updates",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        _doc_id(),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("update", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Never reuse an id: rows at or below a snapshot's upto_id are taken as folded.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_doc_updates_doc_id_id", "doc_updates", ["doc_id", "id"])
    op.create_table(
        "doc_versions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        _doc_id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_doc_versions_doc_id", "doc_versions", ["doc_id"])


def downgrade() -> None:
    for table in ("doc_versions", "doc_updates", "doc_snapshots", "document_members"):
        op.drop_table(table)
    op.drop_table("documents")
