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

SCRIPTS = {
    "CLAIM": CLAIM,
    "RECLAIM": RECLAIM,
    "RELEASE": RELEASE,
    "DELIVER": DELIVER,
    "ONLINE": ONLINE,
    "ROOM": ROOM,
}
SHA = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}
