"""Which tokens a revocation refuses, and that a node reads revocations from the database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.errors import TokenRevoked
from server.auth.revocations import Revocations
from server.auth.tokens import SERVICE, Principal, TokenVerifier, mint_token
from server.config import Settings
from storage.database import Database
from storage.migrate import upgrade

T = 1_800_000_000.0


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tandem.db'}"
    upgrade(url)  # Alembic runs its own event loop: not from inside the test's
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


async def test_tokens_issued_before_are_refused(db: Database) -> None:
    revocations = Revocations(db)
    revocations.note("alice", T)
    assert revocations.revoked(Principal("alice", issued_at=T - 1))
    assert not revocations.revoked(Principal("alice", issued_at=T))
    assert revocations.revoked(Principal("alice"))  # no iat: cannot show it is newer
    assert not revocations.revoked(Principal("bob", issued_at=T - 1))
    assert not revocations.revoked(SERVICE)
    revocations.note("alice", T - 100)  # never narrowed
    assert revocations.before("alice") == T


async def test_a_node_reads_what_another_recorded(db: Database) -> None:
    recorded = await Revocations(db).record("alice", datetime.fromtimestamp(T, UTC))
    assert recorded == T
    async with Revocations(db) as fresh:  # a node starting later
        assert fresh.before("alice") == T


async def test_the_verifier_refuses_a_revoked_token(db: Database) -> None:
    settings = Settings(jwt_secret="s" * 40)
    revocations = Revocations(db)
    verifier = TokenVerifier(settings, revoked=revocations.revoked)
    now = time.time()
    old, _ = mint_token(settings, sub="alice", ttl_s=600, now=now - 60)
    fresh, _ = mint_token(settings, sub="alice", ttl_s=600, now=now)
    assert verifier.verify(old).issued_at == int(now - 60)
    revocations.note("alice", now - 30)
    with pytest.raises(TokenRevoked):
        verifier.verify(old)
    assert verifier.verify(fresh).sub == "alice"


async def test_a_refresh_enforces_what_a_node_missed(db: Database) -> None:
    told: list[set[str]] = []

    async def enforce(users: set[str]) -> None:
        told.append(users)

    node = Revocations(db)
    node.on_revoked = enforce
    await node.load()  # at start: nothing is open yet, nothing to enforce
    other = Revocations(db)
    await other.record("alice", datetime.fromtimestamp(T, UTC))
    await other.record("bob", datetime.fromtimestamp(T, UTC))
    node.note("bob", T)  # bob's was heard over the control plane
    await node.load()
    await node.load()
    assert told == [{"alice"}]
    assert node.revoked(Principal("alice", issued_at=T - 1))
