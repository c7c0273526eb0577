"""The Lua scripts of `RedisBroker`: each does one thing atomically in Redis, in one round trip.

Node keys are derived from the owner each script reads, so these need one Redis (not a Cluster).
"""

from __future__ import annotations

import hashlib

# KEYS: dev, gen counter, the user's devices. ARGV: prefix, node, device. The old owner, if alive
# elsewhere, is told.
CLAIM = """
local previous = redis.call('HGET', KEYS[1], 'node')
local gen = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'gen', gen)
redis.call('SADD', KEYS[3], ARGV[3])
if previous and previous ~= ARGV[2]
   and redis.call('EXISTS', ARGV[1] .. 'node:' .. previous) == 1 then
  redis.call('PUBLISH', ARGV[1] .. 'ch:node:' .. previous, 'r' .. ARGV[3] .. ':' .. gen)
end
return gen
"""

# KEYS: dev, gen counter, the user's devices. ARGV: prefix, node, gen held here (0: unconfirmed),
# device. Keeps a claim that is still ours, takes back one that is missing or held by a dead
# node, and returns 0 (yield) when another live node owns the device now.
RECLAIM = """
redis.call('SADD', KEYS[3], ARGV[4])
local owner = redis.call('HMGET', KEYS[1], 'node', 'gen')
if owner[1] == ARGV[2] and owner[2] == ARGV[3] then return tonumber(ARGV[3]) end
if owner[1] and owner[1] ~= ARGV[2]
   and redis.call('EXISTS', ARGV[1] .. 'node:' .. owner[1]) == 1 then return 0 end
local gen = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'gen', gen)
return gen
"""

# KEYS: dev. ARGV: node, gen (0: any of this node's, for a claim whose answer is not back yet;
# commands reach Redis in the order issued, so that claim is the one found).
RELEASE = """
local owner = redis.call('HMGET', KEYS[1], 'node', 'gen')
if owner[1] == ARGV[1] and (ARGV[2] == '0' or owner[2] == ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: dev. ARGV: prefix, node (the caller), device, kind (f: a frame, c: a command with its
# asker), payload. Returns the receivers (0: offline).
DELIVER = """
local owner = redis.call('HMGET', KEYS[1], 'node', 'gen')
if not owner[1] or owner[1] == ARGV[2]
   or redis.call('EXISTS', ARGV[1] .. 'node:' .. owner[1]) == 0 then return 0 end
return redis.call('PUBLISH', ARGV[1] .. 'ch:node:' .. owner[1],
                  ARGV[4] .. ARGV[3] .. ':' .. owner[2] .. ':' .. ARGV[5])
"""

# KEYS: devs. ARGV: prefix, node (the caller: it knows its own devices). 1 per live device.
ONLINE = """
local alive, result = {}, {}
for i, key in ipairs(KEYS) do
  local node = redis.call('HGET', key, 'node')
  result[i] = 0
  if node and node ~= ARGV[2] then
    if alive[node] == nil then
      alive[node] = redis.call('EXISTS', ARGV[1] .. 'node:' .. node)
    end
    result[i] = alive[node]
  end
end
return result
"""

# KEYS: the user's devices. ARGV: prefix, device, cap. 1 if fewer than `cap` of the user's other
# devices are live on any node; devices no longer live leave the set here (lazily).
ROOM = """
local live = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if member ~= ARGV[2] then
    local node = redis.call('HGET', ARGV[1] .. 'dev:' .. member, 'node')
    if node and redis.call('EXISTS', ARGV[1] .. 'node:' .. node) == 1 then
      live = live + 1
    else
      redis.call('SREM', KEYS[1], member)
    end
  end
end
if live < tonumber(ARGV[3]) then return 1 end
return 0
"""

# --- kept frames (contract §6 across processes) ----------------------------------------------
# A device's inbox: `inbox:<device>:n` HASH s (the latest seq given out), r (the mark reserved
# in the database: no seq beyond it may be given out), and `inbox:<device>` STREAM of entries
# `<seq>-0` {t: ms when kept, f: frame}, capped at the inbox's count and expiring with its TTL.

# KEYS: dev, meta, stream. ARGV: prefix, node (the caller), device, kind (f | c), asker prefix
# of a command ('' for f), frame, event (1: kept even when its client is offline), here (1: the
# device has a socket on the caller's node, which sends it there unless another live node
# owns it), now ms, ttl ms, max. Returns {code, s, r, receivers}: code -1 unseeded, -2 the
# reservation is used up (nothing done), 0 a command for an offline host (not kept), else the
# frame's seq; receivers -1: the caller sends it to its own socket; else PUBLISH's count.
KEEP = """
local meta = redis.call('HMGET', KEYS[2], 's', 'r')
if not meta[1] then return {-1, 0, 0, 0} end
local s, r = tonumber(meta[1]), tonumber(meta[2])
local owner = redis.call('HMGET', KEYS[1], 'node', 'gen')
local node = owner[1]
local alive = node and redis.call('EXISTS', ARGV[1] .. 'node:' .. node) == 1
local here = ARGV[8] == '1' and (not alive or node == ARGV[2])
if not alive and not here and ARGV[7] ~= '1' then return {0, s, r, 0} end
if s >= r then return {-2, s, r, 0} end
s = s + 1
redis.call('HSET', KEYS[2], 's', s)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[11], s .. '-0', 't', ARGV[9], 'f', ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[10])
if here then return {s, s, r, -1} end
if not alive then return {s, s, r, 0} end
return {s, s, r, redis.call('PUBLISH', ARGV[1] .. 'ch:node:' .. node,
        ARGV[4] .. ARGV[3] .. ':' .. owner[2] .. ':' .. s .. ':' .. ARGV[5] .. ARGV[6])}
"""

# KEYS: meta, stream. ARGV: since (-1: read nothing), now ms, ttl ms, max, frames to append
# (a host's queued commands). Appends the frames with the next seqs, then reads the entries
# after `since` still within the TTL. Returns {-1} unseeded, {-2, s, r} reservation used up,
# else {greeted (s before the frames), s, r, seq1, frame1, seq2, frame2, ...}.
OPEN = """
local meta = redis.call('HMGET', KEYS[1], 's', 'r')
if not meta[1] then return {-1, 0, 0} end
local s, r = tonumber(meta[1]), tonumber(meta[2])
if s + #ARGV - 4 > r then return {-2, s, r} end
local greeted = s
for i = 5, #ARGV do
  s = s + 1
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], s .. '-0', 't', ARGV[2], 'f', ARGV[i])
end
if s > greeted then
  redis.call('HSET', KEYS[1], 's', s)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local result = {greeted, s, r}
local since = tonumber(ARGV[1])
if since >= 0 and since < s then
  local cutoff = tonumber(ARGV[2]) - tonumber(ARGV[3])
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')) do
    local fields = entry[2]
    if tonumber(fields[2]) > cutoff then
      result[#result + 1] = entry[1]
      result[#result + 1] = fields[4]
    end
  end
end
return result
"""

# KEYS: meta. ARGV: s, r. A counter missing from Redis (never seeded, or Redis restarted) starts
# at the database's mark: past every seq given out.
SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 's', ARGV[1], 'r', ARGV[2])
end
return 1
"""

# KEYS: meta. ARGV: r, already written to the database. Raises the reservation, never lowers it.
RESERVE = """
local r = redis.call('HGET', KEYS[1], 'r')
if r and tonumber(r) < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'r', ARGV[1]) end
return 1
"""

SCRIPTS = {
    "CLAIM": CLAIM,
    "RECLAIM": RECLAIM,
    "RELEASE": RELEASE,
    "DELIVER": DELIVER,
    "ONLINE": ONLINE,
    "ROOM": ROOM,
    "KEEP": KEEP,
    "OPEN": OPEN,
    "SEED": SEED,
    "RESERVE": RESERVE,
}
SHA = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}
