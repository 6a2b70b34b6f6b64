"""Outgoing webhooks in the database: endpoints, and the outbox of deliveries to them.

`SqlWebhookRepository` is one repository made of three parts, each in a module of its own:
the endpoints (``webhook_endpoints``), the outbox of deliveries, staged in the transaction of
the change that caused them (``webhook_outbox``), and the leases workers on any node take on
due deliveries to send them (``webhook_leases``).
"""

from __future__ import annotations

from storage.webhook_endpoints import SqlWebhookEndpoints
from storage.webhook_leases import SqlWebhookLeases
from storage.webhook_outbox import SqlWebhookOutbox, stage
from storage.webhook_rows import new_id

# ``new_id`` and ``stage`` were defined here before the parts had modules of their own.
__all__ = ["SqlWebhookRepository", "new_id", "stage"]


class SqlWebhookRepository(SqlWebhookEndpoints, SqlWebhookOutbox, SqlWebhookLeases):
    """Endpoints, the delivery outbox and its leases, on one `Database` (each part's
    ``__init__`` is the same: it keeps ``db``)."""
