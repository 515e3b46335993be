-- One lease renewal of the fleet budget, atomic in Redis (ace_std::fleet).
-- KEYS[1] = <prefix>:lease  (sorted set: member -> lease expiry, ms of Redis time)
-- KEYS[2] = <prefix>:want   (hash: member -> what it asks for)
-- KEYS[3] = <prefix>:grant  (hash: member -> the grant it holds)
-- ARGV    = member, want, in_use, lease_ms (0: leave), capacity
-- Returns {grant, held, members, total_held}.
--
-- Invariant: the sum of the held grants of unexpired members never exceeds the capacity.
-- A member's new grant is at most C minus the others' held grants; what it keeps beyond its
-- grant (permits still in use after a cut) is at most what it held before, which already fit.
local lease, wants, grants = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local want = tonumber(ARGV[2])
local in_use = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local capacity = tonumber(ARGV[5])

-- Redis's clock, never the members': one clock for every lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Drop the members whose lease has expired, with their wants and grants.
local dead = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', lease, m)
  redis.call('HDEL', wants, m)
  redis.call('HDEL', grants, m)
end

local prev = tonumber(redis.call('HGET', grants, id) or '0')
if ttl <= 0 then
  redis.call('ZREM', lease, id)
  redis.call('HDEL', wants, id)
  redis.call('HDEL', grants, id)
  return {0, 0, redis.call('ZCARD', lease), 0}
end
redis.call('ZADD', lease, now + ttl, id)
redis.call('HSET', wants, id, want)

local held = {}
local flat = redis.call('HGETALL', grants)
for i = 1, #flat, 2 do held[flat[i]] = tonumber(flat[i + 1]) end
local list = {}
local others = 0
flat = redis.call('HGETALL', wants)
for i = 1, #flat, 2 do
  local m = flat[i]
  list[#list + 1] = {tonumber(flat[i + 1]), m}
  if m ~= id then others = others + (held[m] or 0) end
end

-- Max-min fair share (water filling): the smallest wants are met first, the rest split evenly.
-- Ties go by member id, so the split is deterministic.
table.sort(list, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local left = capacity
local n = #list
local fair = 0
for i, e in ipairs(list) do
  local g = math.min(e[1], math.floor(left / (n - i + 1)))
  if e[2] == id then
    fair = g
    break
  end
  left = left - g
end

-- Never more than is actually free: the others' held grants stand until they renew or expire.
local free = math.max(capacity - others, 0)
local grant = math.min(fair, free)
local keep = math.max(grant, math.min(in_use, prev))
redis.call('HSET', grants, id, keep)

-- An abandoned budget cleans itself up.
redis.call('PEXPIRE', lease, ttl * 4)
redis.call('PEXPIRE', wants, ttl * 4)
redis.call('PEXPIRE', grants, ttl * 4)
return {grant, keep, n, others + keep}
