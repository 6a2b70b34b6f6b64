"""SqlRevocationRepository on real databases: one time per user, never narrowed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from storage.database import Database
from storage.revocations import SqlRevocationRepository

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)


async def revoke(db: Database, user: str, before: datetime) -> datetime:
    async with db.transaction() as session:
        return await SqlRevocationRepository(session).revoke(user, before, now=T0)


async def stored(db: Database) -> dict[str, datetime]:
    async with db.transaction() as session:
        return await SqlRevocationRepository(session).all()


async def test_a_revocation_is_stored_and_only_ever_widened(db: Database) -> None:
    assert await stored(db) == {}
    assert await revoke(db, "alice", T0) == T0
    # An earlier time would let tokens back in: the stored one stays in force.
    assert await revoke(db, "alice", T0 - timedelta(hours=1)) == T0
    later = T0 + timedelta(minutes=5, microseconds=250_000)
    assert await revoke(db, "alice", later) == later
    assert await revoke(db, "bob", T0) == T0
    assert await stored(db) == {"alice": later, "bob": T0}


async def test_concurrent_revocations_of_one_user_keep_the_latest(db: Database) -> None:
    times = [T0 + timedelta(seconds=s) for s in (3, 1, 4, 1, 5, 9, 2, 6)]
    await asyncio.gather(*(revoke(db, "carol", t) for t in times))
    assert await stored(db) == {"carol": max(times)}
