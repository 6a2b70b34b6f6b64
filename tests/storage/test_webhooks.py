"""The webhook repository on real databases: staging with the change, leases, retries."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.clock import SystemClock
from domain.errors import Conflict, NotFound
from domain.flights import FlightService, FlightUpdate
from domain.jobs import JobService, job_event
from domain.notifications import NotificationService
from domain.webhooks import DeliveryStatus, WebhookEndpoint, WebhookEvent
from storage.database import Database
from storage.webhooks import SqlWebhookRepository, new_id
from tests.support.clock import StepClock

LEASE = timedelta(seconds=60)


@pytest.fixture
def repo(db: Database) -> SqlWebhookRepository:
    return SqlWebhookRepository(db)


@pytest.fixture
def jobs(units: Any) -> JobService:
    ids = (f"job-{n}" for n in itertools.count(1))
    return JobService(units, SystemClock(), lambda: next(ids))


async def endpoint(
    repo: SqlWebhookRepository, *events: str, enabled: bool = True, url: str = "http://a.test/"
) -> WebhookEndpoint:
    now = datetime.now(UTC)
    return await repo.create(
        WebhookEndpoint(new_id(), url, events, "", enabled, "s" * 20, now, now)
    )


def event(kind: str = "job.completed", namespace: str | None = None) -> WebhookEvent:
    return WebhookEvent(new_id(), kind, {"n": 1}, datetime.now(UTC), namespace)


async def claim(repo: SqlWebhookRepository, **kwargs: Any) -> list[str]:
    options: dict[str, Any] = {"limit": 100, "per_endpoint": 100, "lease": LEASE, **kwargs}
    return [c.id for c in await repo.claim(**options)]


async def test_endpoints_are_created_read_changed_and_deleted(
    repo: SqlWebhookRepository,
) -> None:
    first = await endpoint(repo, "job.completed")
    second = await endpoint(repo, "presence.join:room", url="https://b.test/hook")
    assert [e.id for e in await repo.endpoints()] == [first.id, second.id]
    assert await repo.get(first.id) == first
    changed = await repo.update(first.id, enabled=False, events=("job.failed",))
    assert changed.enabled is False and changed.events == ("job.failed",)
    assert changed.updated_at >= first.updated_at
    assert await repo.get(first.id) == changed
    await repo.delete(first.id)
    with pytest.raises(NotFound):
        await repo.get(first.id)
    with pytest.raises(NotFound):
        await repo.delete(first.id)
    with pytest.raises(NotFound):
        await repo.update("nope", enabled=True)


async def test_a_domain_change_stages_its_deliveries_in_its_transaction(
    repo: SqlWebhookRepository, jobs: JobService
) -> None:
    wanted = await endpoint(repo, "job.completed", "job.failed")
    other = await endpoint(repo, "flight.updated")
    off = await endpoint(repo, "job.completed", enabled=False)
    job = await jobs.create(owner="alice", kind="checkout")
    await jobs.progress(job.id, 50)
    assert await repo.deliveries(wanted.id) == []  # created and progress are not webhook events
    await jobs.complete(job.id, {"receipt": "R-1"})
    [delivery] = await repo.deliveries(wanted.id)
    assert delivery.event == "job.completed" and delivery.status is DeliveryStatus.PENDING
    payload = delivery.payload()
    assert payload["type"] == "job.completed" and payload["id"] == delivery.event_id
    assert payload["data"]["id"] == job.id and payload["data"]["result"] == {"receipt": "R-1"}
    assert await repo.deliveries(other.id) == []
    assert await repo.deliveries(off.id) == []


async def test_notifications_and_flight_changes_are_staged(
    repo: SqlWebhookRepository, units: Any
) -> None:
    hook = await endpoint(repo, "notification.created", "flight.updated")
    ids = (f"n-{n}" for n in itertools.count(1))
    notifications = NotificationService(units, StepClock(), lambda: next(ids))
    await notifications.create(["alice", "bob"], type="info", title="Hello")
    flights = FlightService(units, StepClock())
    fields = {"number": "TD101", "date": "2026-11-23", "origin": "AMS", "destination": "LHR"}
    at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    await flights.apply(FlightUpdate("td101", fields), at)
    await flights.apply(FlightUpdate("td101", {"gate": "B12"}), at + timedelta(minutes=1))
    staged = [d.payload() for d in reversed(await repo.deliveries(hook.id))]
    kinds = sorted(
        (p["type"], p["data"].get("user") or p["data"].get("gate") or "") for p in staged
    )
    assert kinds == [
        ("flight.updated", ""),
        ("flight.updated", "B12"),
        ("notification.created", "alice"),
        ("notification.created", "bob"),
    ]
    gate = next(p for p in staged if p["data"].get("gate") == "B12")
    assert gate["data"]["changes"] == {"gate": [None, "B12"]}


async def test_a_rolled_back_change_stages_nothing(
    repo: SqlWebhookRepository, jobs: JobService, units: Any
) -> None:
    hook = await endpoint(repo, "job.completed")
    job = await jobs.create(owner="alice", kind="checkout")
    with pytest.raises(RuntimeError):
        async with units() as uow:
            uow.events.emit(job_event("completed", job))
            raise RuntimeError("the change fails before its commit")
    assert await repo.deliveries(hook.id) == []


async def test_channel_events_match_their_namespace(repo: SqlWebhookRepository) -> None:
    rooms = await endpoint(repo, "presence.join:room")
    everywhere = await endpoint(repo, "presence.join")
    assert await repo.stage([event("presence.join", "doc")]) == 1
    assert await repo.stage([event("presence.join", "room")]) == 2
    assert len(await repo.deliveries(rooms.id)) == 1
    assert len(await repo.deliveries(everywhere.id)) == 2


async def test_a_claimed_delivery_is_leased_to_one_claimer(repo: SqlWebhookRepository) -> None:
    hook = await endpoint(repo, "job.completed")
    await repo.stage([event() for _ in range(20)])
    first, second = await asyncio.gather(claim(repo, limit=15), claim(repo, limit=15))
    assert not set(first) & set(second)  # racing claimers never share a row
    rest = await claim(repo)
    assert len(set(first + second + rest)) == 20
    assert await claim(repo) == []  # all leased
    # A lease that ran out (its worker died) is claimed again.
    await repo.stage([event()])
    expired = await claim(repo, lease=timedelta(seconds=-1))
    assert len(expired) == 1
    assert await claim(repo) == expired
    assert len(await repo.deliveries(hook.id, DeliveryStatus.PENDING)) == 21


async def test_a_claim_takes_a_few_per_endpoint_and_skips_busy_and_disabled_ones(
    repo: SqlWebhookRepository,
) -> None:
    backlog = await endpoint(repo, "job.completed")
    await repo.stage([event() for _ in range(10)])
    quiet = await endpoint(repo, "job.failed")
    paused = await endpoint(repo, "job.failed")
    await repo.stage([event("job.failed")])
    await repo.update(paused.id, enabled=False)
    claimed = await repo.claim(limit=3, per_endpoint=2, lease=LEASE)
    by_endpoint = sorted(c.endpoint_id for c in claimed)
    assert by_endpoint == sorted([backlog.id, backlog.id, quiet.id])
    assert await repo.claim(limit=10, per_endpoint=2, lease=LEASE, busy=[backlog.id]) == []
    # The paused endpoint's delivery waits; it goes once enabled again.
    await repo.update(paused.id, enabled=True)
    [resumed] = await repo.claim(limit=10, per_endpoint=2, lease=LEASE, busy=[backlog.id])
    assert resumed.endpoint_id == paused.id and resumed.url == paused.url


async def test_failures_back_off_then_die_and_replays_revive(repo: SqlWebhookRepository) -> None:
    hook = await endpoint(repo, "job.completed")
    await repo.stage([event()])
    [delivery] = await claim(repo)
    await repo.failed(delivery, status=500, error="HTTP 500: 'oops'", retry_in=3600)
    assert await claim(repo) == []  # not due for an hour
    failed = await repo.delivery(delivery)
    assert (failed.attempts, failed.last_status, failed.last_error) == (1, 500, "HTTP 500: 'oops'")
    assert failed.status is DeliveryStatus.PENDING and failed.next_attempt_at is not None
    await repo.failed(delivery, status=None, error="no answer within 1s", retry_in=None)
    dead = await repo.delivery(delivery)
    assert dead.status is DeliveryStatus.DEAD and dead.attempts == 2
    assert (await repo.counts())[DeliveryStatus.DEAD] == 1
    assert [d.id for d in await repo.deliveries(hook.id, DeliveryStatus.DEAD)] == [delivery]

    assert await repo.replay_dead(hook.id) == 1
    assert await claim(repo) == [delivery]
    with pytest.raises(Conflict):
        await repo.replay(delivery)  # leased: an attempt is under way
    await repo.delivered(delivery, 204)
    done = await repo.delivery(delivery)
    assert done.status is DeliveryStatus.DELIVERED and done.last_status == 204
    assert done.delivered_at is not None and done.last_error is None
    assert (await repo.counts()) == {DeliveryStatus.PENDING: 0, DeliveryStatus.DEAD: 0}

    again = await repo.replay(delivery)  # a receiver that lost it asks again
    assert again.status is DeliveryStatus.PENDING and again.attempts == 0
    assert await claim(repo) == [delivery]
    with pytest.raises(NotFound):
        await repo.replay("nope")
    with pytest.raises(NotFound):
        await repo.replay_dead("nope")


async def test_purge_forgets_old_finished_deliveries_only(repo: SqlWebhookRepository) -> None:
    hook = await endpoint(repo, "job.completed")
    await repo.stage([event(), event()])
    first, _ = await claim(repo)
    await repo.delivered(first, 200)
    assert await repo.purge(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await repo.purge(datetime.now(UTC) + timedelta(seconds=1)) == 1
    [left] = await repo.deliveries(hook.id)
    assert left.status is DeliveryStatus.PENDING
    json.loads(left.body)


async def test_deleting_an_endpoint_deletes_its_deliveries(repo: SqlWebhookRepository) -> None:
    hook = await endpoint(repo, "job.completed")
    await repo.stage([event()])
    [delivery] = await claim(repo, lease=timedelta(seconds=-1))
    await repo.delete(hook.id)
    with pytest.raises(NotFound):
        await repo.delivery(delivery)
    with pytest.raises(NotFound):
        await repo.deliveries(hook.id)


async def test_deliveries_are_listed_newest_first_in_pages(repo: SqlWebhookRepository) -> None:
    hook = await endpoint(repo, "job.completed")
    for _ in range(5):
        await repo.stage([event()])
    everything = [d.id for d in await repo.deliveries(hook.id)]
    assert len(everything) == 5
    pages: list[str] = []
    before = None
    for _ in range(5):
        page = await repo.deliveries(hook.id, limit=2, before=before)
        if not page:
            break
        pages.extend(d.id for d in page)
        before = page[-1].id
    assert pages == everything
    created = [(await repo.delivery(i)).created_at for i in everything]
    assert created == sorted(created, reverse=True)
    with pytest.raises(NotFound):
        await repo.deliveries(hook.id, before="nope")
