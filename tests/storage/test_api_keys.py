"""SqlApiKeyRepository on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.api_keys import ApiKey, hash_secret
from domain.errors import Conflict, NotFound
from storage.api_keys import SqlApiKeyRepository
from storage.database import Database

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)


def a_key(name: str = "worker") -> ApiKey:
    return ApiKey(
        id=f"{name:0<16}"[:16], name=name, scopes=("jobs",), rate_per_s=5.0, created_at=NOW
    )


async def test_a_rotated_key_accepts_both_secrets_until_the_grace_ends(db: Database) -> None:
    key = a_key()
    async with db.transaction() as session:
        await SqlApiKeyRepository(session).add(key, hash_secret("first"))
    async with db.transaction() as session:
        found = await SqlApiKeyRepository(session).secrets(key.id)
    assert found is not None and found.key == key
    assert found.accepts("first", NOW) and not found.accepts("second", NOW)

    grace_ends = NOW + timedelta(hours=1)
    async with db.transaction() as session:
        rotated = await SqlApiKeyRepository(session).rotate(
            "worker", hash_secret("second"), grace_ends, NOW
        )
    assert rotated.rotated_at == NOW
    async with db.transaction() as session:
        found = await SqlApiKeyRepository(session).secrets(key.id)
    assert found is not None
    assert found.accepts("second", NOW) and found.accepts("first", NOW)
    assert not found.accepts("first", grace_ends) and found.accepts("second", grace_ends)


async def test_names_are_unique_and_revoked_keys_stay_listed(db: Database) -> None:
    async with db.transaction() as session:
        keys = SqlApiKeyRepository(session)
        await keys.add(a_key("one"), hash_secret("s"))
        await keys.add(a_key("two"), hash_secret("s"))
    with pytest.raises(Conflict, match="exists"):
        async with db.transaction() as session:
            await SqlApiKeyRepository(session).add(
                ApiKey(id="f" * 16, name="one", scopes=("admin",), rate_per_s=None, created_at=NOW),
                hash_secret("s"),
            )
    async with db.transaction() as session:
        revoked = await SqlApiKeyRepository(session).revoke("one", NOW)
    assert revoked.revoked_at == NOW
    with pytest.raises(Conflict, match="revoked"):
        async with db.transaction() as session:
            await SqlApiKeyRepository(session).rotate("one", "h", NOW, NOW)
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await SqlApiKeyRepository(session).revoke("three", NOW)
    async with db.transaction() as session:
        listed = await SqlApiKeyRepository(session).all()
        unknown = await SqlApiKeyRepository(session).secrets("0" * 16)
    assert [(k.name, k.revoked_at) for k in listed] == [("one", NOW), ("two", None)]
    assert unknown is None
