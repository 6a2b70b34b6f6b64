"""The Lua scripts that sequence a channel: offsets, epochs, the stream and idempotency.

KEYS are one channel's (``RedisTarget.key``): ``s`` its stream, ``m`` its meta hash, ``p`` its
pub/sub channel and ``i:<key>`` an idempotency record, all in the channel's slot. The publish
script assigns the next offset, appends to the stream and publishes in one step, so offsets
are serialized per channel in Redis itself.

An epoch names one unbroken history of a channel. A meta hash that is gone (a restart without
persistence, eviction) starts a new epoch, and clients holding the old one are told they cannot
recover. On a cluster the meta hash also records which node (``CLUSTER MYID``) wrote it: a
replica promoted by a failover may lack the last publications its master acknowledged
(replication is asynchronous), and would then hand out their offsets again to different
publications. So the first script a channel runs on a node other than the one that wrote it
starts a new epoch, and subscribers are told to resync instead of silently missing what the
failover lost. Moving a slot to another node (resharding) does the same.
"""

from __future__ import annotations

# The epoch in the meta hash (KEYS[2]), or false where a new one must start; `stamp` is what a
# new meta hash records besides epoch and top.
_EPOCH = """
local epoch = redis.call("HGET", KEYS[2], "epoch")
local stamp = {}
"""
_EPOCH_ON_CLUSTER = """
local meta = redis.call("HMGET", KEYS[2], "epoch", "node")
local node = redis.call("CLUSTER", "MYID")
local epoch = meta[1]
if meta[2] ~= node then epoch = false end
local stamp = {"node", node}
"""

# KEYS: s m p, and i when the publication has an idempotency key. ARGV: payload, stream size,
# stream ttl ms, meta ttl ms, new epoch, idempotency ttl ms, publish command. Returns
# {duplicate, "epoch:offset"}.
_PUBLISH = """
local idem = KEYS[4]
if idem then
  local seen = redis.call("GET", idem)
  if seen then return {1, seen} end
end
{epoch}
if not epoch then
  epoch = ARGV[5]
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[2], "epoch", epoch, "top", 0, unpack(stamp))
end
local top = redis.call("HINCRBY", KEYS[2], "top", 1)
if tonumber(ARGV[2]) > 0 then
  redis.call("XADD", KEYS[1], "MAXLEN", ARGV[2], top .. "-0", "p", ARGV[1])
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
end
redis.call("PEXPIRE", KEYS[2], ARGV[4])
redis.call(ARGV[7], KEYS[3], cmsgpack.pack({top, epoch, ARGV[1]}))
local position = epoch .. ":" .. top
if idem then redis.call("SET", idem, position, "PX", ARGV[6]) end
return {0, position}
"""

# KEYS: s m. ARGV: new epoch, meta ttl ms, since (or -1), limit (or -1). Returns epoch, top
# and the entries after `since` (or the latest `limit`, or all).
_HISTORY = """
{epoch}
if not epoch then
  epoch = ARGV[1]
  redis.call("DEL", KEYS[1])
  redis.call("HSET", KEYS[2], "epoch", epoch, "top", 0, unpack(stamp))
  redis.call("PEXPIRE", KEYS[2], ARGV[2])
end
local top = tonumber(redis.call("HGET", KEYS[2], "top"))
local since = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local entries
if since >= 0 then
  entries = {}
  if since < top then entries = redis.call("XRANGE", KEYS[1], (since + 1) .. "-0", "+") end
elseif limit == 0 then
  entries = {}
elseif limit > 0 then
  entries = redis.call("XREVRANGE", KEYS[1], "+", "-", "COUNT", limit)
else
  entries = redis.call("XRANGE", KEYS[1], "-", "+")
end
return {epoch, top, entries}
"""


def publish_script(*, cluster: bool) -> str:
    return _PUBLISH.replace("{epoch}", _EPOCH_ON_CLUSTER if cluster else _EPOCH)


def history_script(*, cluster: bool) -> str:
    return _HISTORY.replace("{epoch}", _EPOCH_ON_CLUSTER if cluster else _EPOCH)
