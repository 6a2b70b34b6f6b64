"""SqlApiKeyRepository: named API keys, their scopes and their secrets' hashes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.api_keys import ApiKey, KeySecrets
from domain.errors import Conflict, NotFound
from storage.tables import ApiKeyRow, Base

_KEYS = Base.metadata.tables[ApiKeyRow.__tablename__]
_C = _KEYS.c


class SqlApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, key: ApiKey, secret_hash: str) -> None:
        try:
            await self._session.execute(
                insert(_KEYS).values(
                    id=key.id,
                    name=key.name,
                    secret_hash=secret_hash,
                    scopes=list(key.scopes),
                    rate_per_s=key.rate_per_s,
                    created_at=key.created_at,
                )
            )
        except IntegrityError:
            raise Conflict(f"a key named {key.name!r} exists; rotate or revoke it") from None

    async def secrets(self, key_id: str) -> KeySecrets | None:
        row = (await self._session.execute(select(_KEYS).where(_C.id == key_id))).first()
        if row is None:
            return None
        return KeySecrets(
            _to_key(row), row.secret_hash, row.previous_hash, _aware(row.previous_expires_at)
        )

    async def by_name(self, name: str) -> ApiKey:
        row = (await self._session.execute(select(_KEYS).where(_C.name == name))).first()
        if row is None:
            raise NotFound(f"no API key named {name!r}")
        return _to_key(row)

    async def all(self) -> list[ApiKey]:
        rows = await self._session.execute(select(_KEYS).order_by(_C.created_at, _C.name))
        return [_to_key(row) for row in rows]

    async def rotate(
        self, name: str, secret_hash: str, previous_expires_at: datetime, now: datetime
    ) -> ApiKey:
        """A new secret; the old one keeps working until ``previous_expires_at``."""
        key = await self._live(name)
        await self._session.execute(
            update(_KEYS)
            .where(_C.id == key.id)
            .values(
                previous_hash=_C.secret_hash,
                previous_expires_at=previous_expires_at,
                secret_hash=secret_hash,
                rotated_at=now,
            )
        )
        return await self.by_name(name)

    async def revoke(self, name: str, now: datetime) -> ApiKey:
        key = await self._live(name)
        await self._session.execute(update(_KEYS).where(_C.id == key.id).values(revoked_at=now))
        return await self.by_name(name)

    async def _live(self, name: str) -> ApiKey:
        key = await self.by_name(name)
        if key.revoked_at is not None:
            raise Conflict(f"the API key {name!r} is revoked")
        return key


def _to_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        scopes=tuple(row.scopes),
        rate_per_s=row.rate_per_s,
        created_at=_aware(row.created_at),
        rotated_at=_aware(row.rotated_at),
        revoked_at=_aware(row.revoked_at),
    )


def _aware(value: Any) -> Any:
    # SQLite hands back naive datetimes (stored as UTC).
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
