-- A read-only view of the fleet budget (ace_std::fleet): the unexpired members, by Redis's clock.
-- KEYS as in renew.lua. Returns a flat list: member, want, held grant, ms left on its lease, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local m = live[i]
  out[#out + 1] = m
  out[#out + 1] = tonumber(redis.call('ZSCORE', KEYS[2], m) or '0')
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  out[#out + 1] = tonumber(live[i + 1]) - now
end
return out
