"""RedisPresenceStore: presence shared by every node through Redis.

Per channel (keys hash-tagged on the channel like the broker's, so one channel's presence is
in one cluster slot and every script below touches one slot):

- ``{p}{<ch>}:pe`` hash conn -> msgpack entry;
- ``{p}{<ch>}:pc`` hash conn -> user;
- ``{p}{<ch>}:pt`` sorted set conn -> expiry time (ms, Redis's clock);
- ``{p}{<ch>}:pu`` hash user -> number of entries;
- ``{p}{<ch>}:ps`` hash conn -> reported status (``statuses`` reads it without decoding every
  entry: a user's status is compared on each of their connects).

Each operation is one Lua script, so adding, removing and expiring are atomic and exactly one
caller sees a user's count go from 0 to 1 or back. Expiry uses Redis's ``TIME``: one clock for
every node. The four keys themselves expire when no node has refreshed the channel for a while.
"""

from __future__ import annotations

from collections.abc import Collection
from types import TracebackType
from typing import Any, Self

import msgpack

from realtime.presence import (
    Presence,
    PresenceEntry,
    PresenceOptions,
    PresenceUnavailable,
    aggregate,
)
from realtime.redis_connection import (
    CONNECT_ERRORS,
    CallGate,
    Commands,
    RedisTarget,
    command_client,
    discover,
)

# Every script starts with the time in ms and refreshes nothing it does not own.
_NOW = """
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: pe pc pt pu ps. ARGV: conn, user, entry, ttl ms, keys ttl ms, status. Returns 1 if the
# user joined.
_ADD = (
    _NOW
    + """
local joined = 0
if redis.call("HSETNX", KEYS[2], ARGV[1], ARGV[2]) == 1 then
  if redis.call("HINCRBY", KEYS[4], ARGV[2], 1) == 1 then joined = 1 end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
redis.call("HSET", KEYS[5], ARGV[1], ARGV[6])
redis.call("ZADD", KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
for i = 1, 5 do redis.call("PEXPIRE", KEYS[i], ARGV[5]) end
return joined
"""
)

# Deletes one conn (the caller checked it exists); returns its user if they have none left.
_DELETE = """
local function delete(conn)
  local user = redis.call("HGET", KEYS[2], conn)
  redis.call("HDEL", KEYS[1], conn)
  redis.call("HDEL", KEYS[2], conn)
  redis.call("ZREM", KEYS[3], conn)
  redis.call("HDEL", KEYS[5], conn)
  if not user then return false end
  if redis.call("HINCRBY", KEYS[4], user, -1) <= 0 then
    redis.call("HDEL", KEYS[4], user)
    return user
  end
  return false
end
"""

# KEYS: pe pc pt pu ps. ARGV: conn. Returns the user if they left.
_REMOVE = (
    _DELETE
    + """
if redis.call("HEXISTS", KEYS[2], ARGV[1]) == 0 then return false end
return delete(ARGV[1])
"""
)

# KEYS: pe pc pt pu ps. ARGV: ttl ms, keys ttl ms, conn... Returns the conns not stored.
_TOUCH = (
    _NOW
    + """
local missing = {}
local deadline = now + tonumber(ARGV[1])
for i = 3, #ARGV do
  if redis.call("HEXISTS", KEYS[2], ARGV[i]) == 1 then
    redis.call("ZADD", KEYS[3], deadline, ARGV[i])
  else
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing < #ARGV - 2 then
  for i = 1, 5 do redis.call("PEXPIRE", KEYS[i], ARGV[2]) end
end
return missing
"""
)

# KEYS: pe pc pt pu ps. ARGV: batch size. Returns {expired count, {users who left...}}.
_EXPIRE = (
    _NOW
    + _DELETE
    + """
local stale = redis.call("ZRANGEBYSCORE", KEYS[3], "-inf", now, "LIMIT", 0, tonumber(ARGV[1]))
local left = {}
for _, conn in ipairs(stale) do
  local user = delete(conn)
  if user then left[#left + 1] = user end
end
return {#stale, left}
"""
)

# KEYS: pe pt. Returns the unexpired entries.
_MEMBERS = (
    _NOW
    + """
local out = {}
for _, conn in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "(" .. now, "+inf")) do
  local raw = redis.call("HGET", KEYS[1], conn)
  if raw then out[#out + 1] = raw end
end
return out
"""
)

# KEYS: pt ps. Returns the distinct statuses of the unexpired entries (an entry stored before
# `ps` existed counts as online).
_STATUSES = (
    _NOW
    + """
local seen, out = {}, {}
for _, conn in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "(" .. now, "+inf")) do
  local status = redis.call("HGET", KEYS[2], conn) or "online"
  if not seen[status] then
    seen[status] = true
    out[#out + 1] = status
  end
end
return out
"""
)

_EXPIRE_BATCH = 1000


class RedisPresenceStore:
    """Presence for several nodes sharing one Redis or Redis Cluster (the broker's URL)."""

    def __init__(self, url: str, options: PresenceOptions) -> None:
        self._target = RedisTarget.parse(url)
        self._gate = CallGate(self._target)
        self._ttl_ms = max(1, int(options.ttl * 1000))
        # Keys outlive entries so a slow heartbeat never loses the counts; untouched channels
        # (every node gone) still disappear.
        self._keys_ttl_ms = max(3 * self._ttl_ms, 60_000)
        self._redis: Commands | None = None
        self._scripts: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        self._redis = command_client(self._target)
        await discover(self._redis)
        for name, source in (
            ("add", _ADD),
            ("remove", _REMOVE),
            ("touch", _TOUCH),
            ("expire", _EXPIRE),
            ("members", _MEMBERS),
            ("statuses", _STATUSES),
        ):
            self._scripts[name] = self._redis.register_script(source)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._scripts = {}
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def add(self, channel: str, entry: PresenceEntry) -> bool:
        payload = msgpack.packb(entry.as_dict())
        args = [entry.conn, entry.user, payload, self._ttl_ms, self._keys_ttl_ms, entry.status]
        return bool(await self._run("add", self._keys(channel), args))

    async def remove(self, channel: str, conn: str) -> str | None:
        user = await self._run("remove", self._keys(channel), [conn])
        return user.decode() if user else None

    async def touch(self, channel: str, conns: Collection[str]) -> set[str]:
        if not conns:
            return set()
        args = [self._ttl_ms, self._keys_ttl_ms, *conns]
        missing = await self._run("touch", self._keys(channel), args)
        return {conn.decode() for conn in missing}

    async def expire(self, channel: str) -> list[str]:
        left: list[str] = []
        while True:
            count, users = await self._run("expire", self._keys(channel), [_EXPIRE_BATCH])
            left.extend(user.decode() for user in users)
            if count < _EXPIRE_BATCH:
                return left

    async def members(self, channel: str, limit: int) -> Presence:
        return aggregate(await self.entries(channel), limit)

    async def entries(self, channel: str) -> list[PresenceEntry]:
        keys = [self._key(channel, "pe"), self._key(channel, "pt")]
        raw = await self._run("members", keys, [])
        return [PresenceEntry.from_dict(msgpack.unpackb(item)) for item in raw]

    async def statuses(self, channel: str) -> set[str]:
        keys = [self._key(channel, "pt"), self._key(channel, "ps")]
        return {status.decode() for status in await self._run("statuses", keys, [])}

    def _key(self, channel: str, suffix: str) -> str:
        return self._target.key(channel, suffix)

    def _keys(self, channel: str) -> list[str]:
        return [self._key(channel, suffix) for suffix in ("pe", "pc", "pt", "pu", "ps")]

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None or self._redis is None:
            raise RuntimeError("RedisPresenceStore is not running: use `async with store:`")
        try:
            async with self._gate(self._redis):
                return await script(keys=keys, args=args)
        except CONNECT_ERRORS as exc:
            raise PresenceUnavailable(f"redis: {exc}") from exc
