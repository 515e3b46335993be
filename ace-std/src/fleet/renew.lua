-- One lease renewal of the fleet budget, atomic in Redis (ace_std::fleet).
-- KEYS[1] = <prefix>:lease  (sorted set: member -> lease expiry, ms of Redis time)
-- KEYS[2] = <prefix>:want   (sorted set: member -> what it asks for)
-- KEYS[3] = <prefix>:grant  (hash: member -> the grant it holds)
-- KEYS[4] = <prefix>:total  (the sum of the live members' held grants)
-- KEYS[5] = <prefix>:hist   (hash: want -> how many live members want it)
-- ARGV    = member, want, in_use, lease_ms (0: leave), capacity
-- Returns {grant, held, members, total_held}.
--
-- Invariant: the sum of the held grants of unexpired members never exceeds the capacity.
-- A member's new grant is at most C minus the others' held grants; what it keeps beyond its
-- grant (permits still in use after a cut) is at most what it held before, which already fit.
-- Cost: O(log n) bookkeeping plus one pass over the distinct wants (at most C + 1 of them).
local lease, wants, grants, total_key, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
local capacity = tonumber(ARGV[5])
local want = math.min(math.max(tonumber(ARGV[2]), 0), capacity)
local in_use = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])

-- Keeps the histogram of wants in step with the sorted set.
local function unwant(m)
  local w = redis.call('ZSCORE', wants, m)
  if w then
    if redis.call('HINCRBY', hist, w, -1) <= 0 then
      redis.call('HDEL', hist, w)
    end
    redis.call('ZREM', wants, m)
  end
end

-- Redis's clock, never the members': one clock for every lease.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Drop the members whose lease has expired, with their wants and grants.
local total = tonumber(redis.call('GET', total_key) or '0')
local dead = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
for _, m in ipairs(dead) do
  total = total - tonumber(redis.call('HGET', grants, m) or '0')
  redis.call('ZREM', lease, m)
  unwant(m)
  redis.call('HDEL', grants, m)
end

local prev = tonumber(redis.call('HGET', grants, id) or '0')
local others = math.max(total - prev, 0)
if ttl <= 0 then
  redis.call('ZREM', lease, id)
  unwant(id)
  redis.call('HDEL', grants, id)
  redis.call('SET', total_key, others)
  return {0, 0, redis.call('ZCARD', lease), others}
end
redis.call('ZADD', lease, now + ttl, id)
unwant(id)
redis.call('ZADD', wants, want, id)
redis.call('HINCRBY', hist, want, 1)

-- Max-min fair share (water filling) over the wants in ascending order: the smallest are met
-- in full while they fit under an even split of what is left; the rest share the level.
-- The level is rounded up, so a split of 40 among 3 is 14, 14, 12 once the first two hold 14.
-- A group of equal wants fits as a whole when its first member does.
local flat = redis.call('HGETALL', hist)
local groups = {}
for i = 1, #flat, 2 do
  groups[#groups + 1] = {tonumber(flat[i]), tonumber(flat[i + 1])}
end
table.sort(groups, function(a, b) return a[1] < b[1] end)
local n = redis.call('ZCARD', lease)
local left, k = capacity, n
local fair = want
for _, g in ipairs(groups) do
  local w, count = g[1], g[2]
  if w * k <= left then
    left = left - w * count
    k = k - count
  else
    fair = math.min(want, math.ceil(left / k))
    break
  end
end

-- Never more than is actually free: the others' held grants stand until they renew or expire.
local grant = math.max(math.min(fair, capacity - others), 0)
local keep = math.max(grant, math.min(in_use, prev))
redis.call('HSET', grants, id, keep)
total = others + keep
redis.call('SET', total_key, total)

-- An abandoned budget cleans itself up.
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ttl * 4)
end
return {grant, keep, n, total}
