"""ORM tables. Rows never leave this package: repositories convert them to domain objects."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OutboxRow(Base):
    """An event committed with the change that caused it, waiting to be published."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    channel: Mapped[str] = mapped_column(String(160))
    event: Mapped[str] = mapped_column(String(64))
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    # Passed to the broker when relayed; a staged retry of the same request dedupes there.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # Failed publishes of this row (the broker refusing it, not the broker being down); at
    # the limit it is dead-lettered (failed_at set) and never tried again.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)

    __table_args__ = (
        # The relay only ever scans pending rows (neither sent nor dead) in id order.
        Index(
            "ix_outbox_pending",
            "id",
            postgresql_where=sent_at.is_(None) & failed_at.is_(None),
            sqlite_where=sent_at.is_(None) & failed_at.is_(None),
        ),
    )


class TokenRevocationRow(Base):
    """A user's tokens issued (``iat``) before ``revoked_before`` are refused, on every node."""

    __tablename__ = "token_revocations"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revoked_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    """A named API key: only a hash of its secret is kept. A rotated key's previous secret
    keeps working until ``previous_expires_at``, so callers can roll over without a gap."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    previous_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    previous_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None
    )
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Requests per second this key may make to a node (None: the server's default).
    rate_per_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str | None] = mapped_column(String(128), default=None)
    message: Mapped[str | None] = mapped_column(String(512), default=None)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class JobEventRow(Base):
    """Every version of every job: the audit trail."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class NotificationRow(Base):
    """One user's inbox entry; a batch created with one idempotency key shares it."""

    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(2000), default=None)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    __table_args__ = (
        # The inbox page (newest first) and the unread count.
        Index("ix_notifications_user_created_at", "user", "created_at"),
        Index("ix_notifications_user_read_at", "user", "read_at"),
        # A repeated idempotency key finds the batch it created; one row per user and key.
        Index("ix_notifications_idempotency_key", "idempotency_key", "user", unique=True),
    )


class FlightRow(Base):
    """A flight's current status, as the newest provider update left it."""

    __tablename__ = "flights"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    number: Mapped[str] = mapped_column(String(16))
    date: Mapped[date] = mapped_column(Date)
    origin: Mapped[str] = mapped_column(String(8))
    destination: Mapped[str] = mapped_column(String(8))
    scheduled_departure: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    estimated_departure: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    actual_departure: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scheduled_arrival: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    estimated_arrival: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    actual_arrival: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gate: Mapped[str | None] = mapped_column(String(16))
    terminal: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    delay_minutes: Mapped[int] = mapped_column(Integer)
    position: Mapped[Any] = mapped_column(JSON, nullable=True)
    provider_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FlightHistoryRow(Base):
    """One changed field of one flight version: every change is kept."""

    __tablename__ = "flight_history"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    flight_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("flights.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(32))
    old: Mapped[Any] = mapped_column(JSON, nullable=True)
    new: Mapped[Any] = mapped_column(JSON, nullable=True)
    provider_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_flight_history_flight_id_version", "flight_id", "version"),)


class WebhookDeliveryRow(Base):
    """An accepted webhook delivery (its signature), kept until its timestamp is too old to
    be accepted again: a replay on any node finds it."""

    __tablename__ = "webhook_deliveries"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class WebhookEndpointRow(Base):
    """A receiver of outgoing webhooks. The secret is kept as is: it signs every request."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookOutboxRow(Base):
    """One event to send to one endpoint: staged with the change that caused it, sent by
    whichever node holds its lease (``locked_until``), retried until delivered or dead."""

    __tablename__ = "webhook_outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    __table_args__ = (
        # Workers scan due pending rows; the API lists an endpoint's rows by status.
        Index("ix_webhook_outbox_due", "status", "next_attempt_at"),
        Index("ix_webhook_outbox_endpoint", "endpoint_id", "status", "created_at"),
    )


# Documents: rows written with Core statements in storage/documents.py.
_LOG_ID = BigInteger().with_variant(Integer, "sqlite")


class DocumentRow(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    format: Mapped[str] = mapped_column(String(8))
    epoch: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DocumentMemberRow(Base):
    __tablename__ = "document_members"

    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))


class DocSnapshotRow(Base):
    """A document's compacted Yjs state, and the last log row folded into it."""

    __tablename__ = "doc_snapshots"

    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    upto_id: Mapped[int] = mapped_column(_LOG_ID, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DocUpdateRow(Base):
    """One raw Yjs update, appended by the node whose client sent it."""

    __tablename__ = "doc_updates"

    id: Mapped[int] = mapped_column(_LOG_ID, primary_key=True, autoincrement=True)
    doc_id: Mapped[str] = mapped_column(String(128), ForeignKey("documents.id", ondelete="CASCADE"))
    epoch: Mapped[str] = mapped_column(String(32))
    update: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_doc_updates_doc_id_id", "doc_id", "id"),
        # Ids must never be reused: a snapshot folds the rows up to an id, and SQLite would
        # otherwise hand a deleted id to the next row, which then hides below the snapshot.
        {"sqlite_autoincrement": True},
    )


class DocVersionRow(Base):
    __tablename__ = "doc_versions"

    id: Mapped[int] = mapped_column(_LOG_ID, primary_key=True, autoincrement=True)
    doc_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
