"""NotificationService on real databases: inbox, unread counts, idempotency, receipts."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from domain.errors import InvalidPayload, NotFound
from domain.notifications import NotificationService
from storage.database import Database
from storage.notifications import SqlNotificationRepository
from storage.tables import NotificationRow, OutboxRow
from tests.support.clock import StepClock


@pytest.fixture
def service(units: Any) -> NotificationService:
    ids = (f"n-{n:04d}" for n in itertools.count(1))
    return NotificationService(units, StepClock(), lambda: next(ids))


async def outbox(db: Database) -> list[tuple[str, str, dict[str, object]]]:
    async with db.sessions() as session:
        rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.channel, r.event, r.data) for r in rows]


async def test_create_lists_newest_first_with_events(
    service: NotificationService, db: Database
) -> None:
    first = await service.create("alice", type="info", title="Hello", body="World")
    second = await service.create(
        ["alice", "bob"], type="action", title="Approve", link="/a/1", data={"n": 1}
    )
    assert [n.user for n in second] == ["alice", "bob"]
    page = await service.list("alice")
    assert [n.id for n in page.notifications] == [second[0].id, first[0].id]
    assert page.unread == 2 and page.next_cursor is None
    assert page.notifications[0].data == {"n": 1} and page.notifications[0].link == "/a/1"
    assert page.notifications[1] == first[0]
    events = await outbox(db)
    assert [(c, e, d["unread"]) for c, e, d in events] == [
        ("user:alice", "notification.created", 1),
        ("user:alice", "notification.created", 2),
        ("user:bob", "notification.created", 1),
    ]
    assert events[0][2]["title"] == "Hello" and events[0][2]["id"] == first[0].id
    assert await service.unread_count("bob") == 1
    assert await service.unread_count("nobody") == 0


async def test_pagination_with_an_opaque_cursor(service: NotificationService) -> None:
    made = [(await service.create("carol", type="info", title=f"t{i}"))[0].id for i in range(7)]
    await service.create("dave", type="info", title="not carol's")
    seen: list[str] = []
    cursor = None
    while True:
        page = await service.list("carol", cursor=cursor, limit=3)
        seen += [n.id for n in page.notifications]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(made))
    with pytest.raises(InvalidPayload):
        await service.list("carol", cursor="garbage!")
    with pytest.raises(InvalidPayload):
        await service.list("carol", limit=0)
    assert [n.id for n in await service.latest("carol", 2)] == list(reversed(made))[:2]


async def test_mark_read_and_unread_counts(service: NotificationService, db: Database) -> None:
    ids = [(await service.create("erin", type="warning", title=f"w{i}"))[0].id for i in range(4)]
    other = (await service.create("frank", type="info", title="x"))[0].id
    assert await service.mark_read("erin", [ids[0], ids[1]]) == 2
    assert await service.mark_read("erin", [ids[0]]) == 2  # already read: no change
    unread = await service.list("erin", unread_only=True)
    assert [n.id for n in unread.notifications] == [ids[3], ids[2]] and unread.unread == 2
    with pytest.raises(NotFound):
        await service.mark_read("erin", [ids[2], other])  # another user's id
    assert await service.unread_count("erin") == 2 and await service.unread_count("frank") == 1
    assert await service.mark_read("erin") == 0
    read_events = [d for c, e, d in await outbox(db) if e == "notification.read"]
    assert read_events == [
        {"ids": [ids[0], ids[1]], "unread": 2},
        {"ids": [ids[2], ids[3]], "unread": 0},
    ]
    assert all(n.read_at is not None for n in (await service.list("erin")).notifications)


async def test_idempotency_key_returns_the_original(
    service: NotificationService, db: Database
) -> None:
    first = await service.create(
        ["gina", "hank"], type="success", title="Paid", idempotency_key="k1"
    )
    again = await service.create(
        ["gina", "hank"], type="success", title="Paid", idempotency_key="k1"
    )
    assert [n.id for n in again] == [n.id for n in first]
    racing = await asyncio.gather(
        *(service.create("ivan", type="info", title="once", idempotency_key="k2") for _ in range(5))
    )
    assert len({tuple(n.id for n in r) for r in racing}) == 1
    async with db.sessions() as session:
        rows = list(await session.scalars(select(NotificationRow.user)))
    assert sorted(rows) == ["gina", "hank", "ivan"]


async def test_validation_stores_nothing(service: NotificationService, db: Database) -> None:
    for kwargs in (
        {"type": "nope", "title": "x"},
        {"type": "info", "title": ""},
        {"type": "info", "title": "x" * 201},
        {"type": "info", "title": "x", "body": "b" * 2001},
    ):
        with pytest.raises(InvalidPayload):
            await service.create("judy", **kwargs)
    with pytest.raises(InvalidPayload):
        await service.create([], type="info", title="x")
    assert (await service.list("judy")).notifications == [] and await outbox(db) == []


async def test_delete_and_delivery_receipts(service: NotificationService) -> None:
    a = (await service.create("kate", type="error", title="a"))[0]
    b = (await service.create("kate", type="error", title="b"))[0]
    with pytest.raises(NotFound):
        await service.delete("mallory", a.id)
    await service.delete("kate", a.id)
    with pytest.raises(NotFound):
        await service.delete("kate", a.id)
    assert [n.id for n in (await service.list("kate")).notifications] == [b.id]
    assert await service.mark_delivered([b.id]) == 1
    first = (await service.latest("kate"))[0].delivered_at
    assert first is not None
    assert await service.mark_delivered([b.id]) == 0
    assert (await service.latest("kate"))[0].delivered_at == first


async def test_purge_deletes_only_notifications_read_before_the_horizon(
    service: NotificationService, db: Database
) -> None:
    old, recent, unread = [
        (await service.create("liam", type="info", title=title))[0]
        for title in ("old", "recent", "unread")
    ]
    await service.mark_read("liam", [old.id])
    async with db.sessions() as session:
        read_at = await session.scalar(
            select(NotificationRow.read_at).where(NotificationRow.id == old.id)
        )
    assert read_at is not None
    await service.mark_read("liam", [recent.id])
    async with db.transaction() as session:
        # Just after the first read: the second read (a later clock step) stays.
        horizon = read_at.replace(tzinfo=read_at.tzinfo or UTC) + timedelta(microseconds=1)
        purged = await SqlNotificationRepository(session).purge_read(horizon)
    assert purged == 1
    left = (await service.list("liam")).notifications
    assert {n.id for n in left} == {recent.id, unread.id}
    async with db.transaction() as session:
        far_future = datetime(2100, 1, 1, tzinfo=UTC)
        assert await SqlNotificationRepository(session).purge_read(far_future) == 1
    # However old, an unread notification is never purged.
    assert [n.id for n in (await service.list("liam")).notifications] == [unread.id]
    assert await service.unread_count("liam") == 1
