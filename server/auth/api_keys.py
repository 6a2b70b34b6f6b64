"""KeyRing: who an API key is, what it may do, and how fast.

Two kinds of key: those in ``TANDEM_API_KEYS`` (every scope, no rate limit: the first hour
and break-glass access), and named keys from the database, made with ``tandem keys create``
or ``POST /api/admin/keys``. A node remembers a named key for ``TANDEM_API_KEY_CACHE_S``, so
a request costs a hash, not a query; a rotation or revocation made on this node applies at
once, one made elsewhere within that time. While the database is down, a key seen before
keeps working on what was read of it.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from domain.api_keys import (
    ApiKey,
    KeySecrets,
    check_name,
    check_scopes,
    format_key,
    hash_secret,
    new_key_id,
    new_secret,
    split_key,
)
from domain.errors import RateLimited, Unauthorized, Unavailable
from realtime.ratelimit import TokenBucket
from server.auth.tokens import SERVICE, Principal
from server.config import Settings
from storage.api_keys import SqlApiKeyRepository
from storage.database import Database

# Bounds what unknown ids (guessed keys) can make a node remember.
CACHE_ENTRIES = 10_000
INVALID = "invalid API key"


class KeyRing:
    def __init__(
        self, settings: Settings, db: Database, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._environment = [key.encode() for key in settings.effective_api_keys()]
        self._db = db
        self._ttl = settings.api_key_cache_s
        self._default_rate = settings.api_key_rate_per_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeySecrets | None]] = OrderedDict()
        self._buckets: dict[str, tuple[float, TokenBucket]] = {}

    async def authenticate(self, credential: str) -> Principal | None:
        """The principal of an API key; None when ``credential`` is not shaped like one."""
        given = credential.encode()
        for admin_key in self._environment:
            if hmac.compare_digest(given, admin_key):
                return SERVICE
        parts = split_key(credential)
        if parts is None:
            return None
        key_id, secret = parts
        found = await self._secrets(key_id)
        if found is None or not found.accepts(secret, datetime.now(UTC)):
            raise Unauthorized(INVALID)
        key = found.key
        if key.revoked_at is not None:
            raise Unauthorized(f"{INVALID}: the key {key.name!r} was revoked")
        self._throttle(key)
        return Principal(
            sub=f"key:{key.name}",
            admin="admin" in key.scopes,
            is_service=True,
            scopes=key.scopes,
        )

    # -- management (the admin API and ``tandem keys``) ----------------------------------------

    async def create(
        self, name: str, scopes: Sequence[str], rate_per_s: float | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is shown this once and never stored."""
        key = ApiKey(
            id=new_key_id(),
            name=check_name(name),
            scopes=check_scopes(scopes),
            rate_per_s=rate_per_s,
            created_at=datetime.now(UTC),
        )
        secret = new_secret()
        async with self._db.transaction() as session:
            await SqlApiKeyRepository(session).add(key, hash_secret(secret))
        return key, format_key(key.id, secret)

    async def list(self) -> list[ApiKey]:
        async with self._db.transaction() as session:
            return await SqlApiKeyRepository(session).all()

    async def rotate(self, name: str, grace_s: float) -> tuple[ApiKey, str]:
        """A new secret for ``name``; the old one works for ``grace_s`` more seconds."""
        now = datetime.now(UTC)
        secret = new_secret()
        async with self._db.transaction() as session:
            key = await SqlApiKeyRepository(session).rotate(
                name, hash_secret(secret), now + timedelta(seconds=grace_s), now
            )
        self._cache.pop(key.id, None)
        return key, format_key(key.id, secret)

    async def revoke(self, name: str) -> ApiKey:
        async with self._db.transaction() as session:
            key = await SqlApiKeyRepository(session).revoke(name, datetime.now(UTC))
        self._cache.pop(key.id, None)
        return key

    # -- internals ---------------------------------------------------------------------------

    async def _secrets(self, key_id: str) -> KeySecrets | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._ttl:
            self._cache.move_to_end(key_id)
            return cached[1]
        try:
            async with self._db.transaction() as session:
                found = await SqlApiKeyRepository(session).secrets(key_id)
        except Unavailable:
            if cached is not None and cached[1] is not None:
                return cached[1]
            raise
        self._cache[key_id] = (now, found)
        self._cache.move_to_end(key_id)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return found

    def _throttle(self, key: ApiKey) -> None:
        rate = key.rate_per_s or self._default_rate
        held = self._buckets.get(key.id)
        if held is None or held[0] != rate:
            # A second's worth of requests may come at once.
            held = self._buckets[key.id] = (rate, TokenBucket(rate, max(1.0, rate)))
        if not held[1].take():
            raise RateLimited(
                f"the API key {key.name!r} is over its {rate:g} requests per second",
                retry_after_s=max(1, math.ceil(1 / rate)),
            )
