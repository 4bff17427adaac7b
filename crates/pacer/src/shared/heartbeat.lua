-- A worker says it is alive, on Redis's clock; returns how many are (seen in
-- the last 10 s), which sizes each one's share if Redis goes away. The
-- worker's own wall clock is recorded only to show how far it is off
-- (diagnostics and the clock-skew test); no limit reads it.
--
-- KEYS: 1 workers alive (sorted set), 2 clock offsets (hash)
-- ARGV: 1 worker id, 2 the worker's wall clock, milliseconds since the epoch

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10000000)
redis.call('PEXPIRE', KEYS[1], 60000)
local mine = tonumber(ARGV[2])
local skew = 0
if mine ~= nil and mine == mine then
  skew = math.floor(math.max(-1e12, math.min(1e12, mine - now / 1000)))
end
redis.call('HSET', KEYS[2], ARGV[1], skew)
redis.call('PEXPIRE', KEYS[2], 60000)
return {redis.call('ZCARD', KEYS[1]), skew}
