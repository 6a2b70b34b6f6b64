"""The token revocations this node enforces: read from the database, told of new ones.

Every node keeps all revocations in memory (one time per user), so checking a token costs a
dict lookup, not a query. The node that records a revocation tells the others over the
control plane at once; each also re-reads the table every ``refresh_s``, which heals a message
lost while it was cut off from the broker, and a restart reads it afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from realtime.periodic import Periodic
from server.auth.tokens import Principal
from storage.database import Database
from storage.revocations import SqlRevocationRepository

log = logging.getLogger(__name__)


class Revocations:
    def __init__(self, db: Database, *, refresh_s: float = 30.0) -> None:
        self._db = db
        self._before: dict[str, float] = {}
        self._loaded = False
        self._refresh = Periodic(self.load, refresh_s, name="revocations-refresh")
        # Told of the users whose revocation a refresh found newer than this node knew (a
        # message it missed): their connections still open must be cut here too.
        self.on_revoked: Callable[[set[str]], Awaitable[object]] | None = None

    def revoked(self, principal: Principal) -> bool:
        """Issued before its user's revocation time; a token without ``iat`` cannot show it
        was not, so it is refused too once its user has one."""
        before = self._before.get(principal.sub)
        if before is None or principal.is_service:
            return False
        return principal.issued_at is None or principal.issued_at < before

    def before(self, user: str) -> float | None:
        return self._before.get(user)

    def note(self, user: str, before: float) -> bool:
        """A revocation recorded (by any node): enforce it from now on. True when it is
        newer than what this node knew."""
        known = self._before.get(user)
        if known is not None and known >= before:
            return False
        self._before[user] = before
        return True

    async def record(self, user: str, before: datetime) -> float:
        """Store a revocation durably; returns the time in force for ``user`` (a later one
        already stored wins)."""
        async with self._db.transaction() as session:
            in_force = await SqlRevocationRepository(session).revoke(
                user, before, now=datetime.now(UTC)
            )
        self.note(user, in_force.timestamp())
        return in_force.timestamp()

    async def load(self) -> None:
        async with self._db.transaction() as session:
            stored = await SqlRevocationRepository(session).all()
        first = not self._loaded
        newer = {user for user, before in stored.items() if self.note(user, before.timestamp())}
        self._loaded = True
        # At start no connection is open yet; later, what was missed is enforced now.
        if newer and not first and self.on_revoked is not None:
            await self.on_revoked(newer)

    async def __aenter__(self) -> Self:
        try:
            await self.load()
        except Exception:
            # A database still starting: the periodic refresh catches up.
            log.warning("could not read token revocations yet; retrying", exc_info=True)
        self._refresh.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._refresh.stop()
