-- One lease renewal of the fleet budget, atomic in Redis (ace_std::fleet).
-- KEYS[1] = <prefix>:lease  (sorted set: member -> lease expiry, ms of Redis time)
-- KEYS[2] = <prefix>:want   (sorted set: member -> what it asks for)
-- KEYS[3] = <prefix>:grant  (hash: member -> the grant it holds)
-- KEYS[4] = <prefix>:total  (the sum of the live members' held grants)
-- KEYS[5] = <prefix>:hist   (hash: want -> how many live members want it)
-- KEYS[6] = <prefix>:recover (exists for one lease after a member rejoined: no one grows)
-- ARGV    = member, want, in_use, held, lease_ms, capacity, op ('renew' or 'leave')
--   held: what the member believes it holds (the held of its last renewal, 0 if it never
--   joined). Every count is at most the capacity (the client clamps them), so Lua's doubles
--   count exactly.
-- Returns {grant, held, members, total_held, rejoined (1: unknown here, capped at held)}.
--
-- Invariant: the sum of the held grants of unexpired members never exceeds the capacity.
-- A member's new grant is at most C minus the others' held grants; what it keeps beyond its
-- grant (permits still in use after a cut) is at most what it held before, which already fit.
-- When Redis loses the state (restart without persistence, FLUSHALL, failover, eviction) the
-- members still use what they held: one that Redis does not know but that says it held a grant
-- rejoins with at most that much, and for one lease after (the recovery window, long enough
-- for every member with the same lease to renew or lose its grant) no member is granted more
-- than it holds and newcomers wait, so the sum of what the members use stays within C.
-- Cost: O(log n) bookkeeping plus one pass over the distinct wants (at most C + 1 of them).
local lease, wants, grants, total_key, hist = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local recover = KEYS[6]
local id = ARGV[1]
local capacity = tonumber(ARGV[6])
local want = math.min(math.max(tonumber(ARGV[2]), 0), capacity)
local in_use = tonumber(ARGV[3])
local claimed = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local leaving = ARGV[7] == 'leave'

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

-- The total, or the sum of the grants if the key alone was lost (evicted).
local total = tonumber(redis.call('GET', total_key) or '-1')
if total < 0 then
  total = 0
  for _, g in ipairs(redis.call('HVALS', grants)) do
    total = total + tonumber(g)
  end
end
-- Drop the members whose lease has expired, with their wants and grants.
local dead = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
for _, m in ipairs(dead) do
  total = total - tonumber(redis.call('HGET', grants, m) or '0')
  redis.call('ZREM', lease, m)
  unwant(m)
  redis.call('HDEL', grants, m)
end

-- No live member holds anything: whatever the total said belonged to the dead.
if redis.call('ZCARD', lease) == 0 then
  total = 0
end

-- An abandoned budget cleans itself up, the total with the rest (a SET clears a TTL).
local function expire_all()
  for i = 1, 5 do
    redis.call('PEXPIRE', KEYS[i], ttl * 4)
  end
end

local known = redis.call('ZSCORE', lease, id)
local prev = tonumber(redis.call('HGET', grants, id) or '0')
local others = math.max(total - prev, 0)
if leaving then
  redis.call('ZREM', lease, id)
  unwant(id)
  redis.call('HDEL', grants, id)
  redis.call('SET', total_key, others)
  expire_all()
  return {0, 0, redis.call('ZCARD', lease), others, 0}
end
-- Unknown here, yet it held a grant: the state was lost (or its lease expired here) while it
-- kept using it. It rejoins with at most what it held, as the others do.
local rejoined = 0
if not known and claimed > 0 then
  want = math.min(want, claimed)
  rejoined = 1
  redis.call('SET', recover, 1, 'PX', ttl)
end
-- In the recovery window the others may not have re-registered what they still use: no
-- member grows past what it holds (or, rejoining, what it held), and newcomers wait.
if redis.call('EXISTS', recover) == 1 then
  want = math.min(want, math.max(prev, rejoined * want))
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
-- What it keeps beyond its grant is what it uses of what it held before: for a member Redis
-- lost, what it says it held (its claim), which fit with the others' when it was granted.
local before = prev
if not known then
  before = claimed
end
local keep = math.max(grant, math.min(in_use, before))
redis.call('HSET', grants, id, keep)
total = others + keep
redis.call('SET', total_key, total)
expire_all()
return {grant, keep, n, total, rejoined}
