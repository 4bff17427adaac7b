-- Admission against the limits shared by every pacer on one upstream and key.
-- One call: the heartbeat, the latest limits read from headers, the shared
-- pause, then a GCRA for requests and one for tokens on Redis's clock. It
-- reserves one request and ARGV[2] tokens at the earliest instant both
-- allow (a place in line, so a paced request costs one round trip), or, when
-- that is further than ARGV[12] microseconds ahead, reserves nothing.
--
-- KEYS: 1 request TAT, 2 token TAT, 3 pause-until, 4 learned limits (hash),
--       5 workers alive (sorted set)
-- ARGV: 1 worker id, 2 tokens, 3 configured rpm, 4 its burst, 5 configured
--       tpm, 6 its burst, 7 rpm seen in headers, 8 its bucket, 9 tpm seen,
--       10 its bucket, 11 resume (1: this process paced alone while Redis was
--       away; a missing TAT means Redis lost it, so the bucket starts empty),
--       12 longest wait reserved, microseconds
-- Returns {granted 0/1, wait µs, workers alive, rpm, request burst, tpm,
--          token burst} (limits as strings, "0" for none).
-- Times are microseconds (exact in a double until 2255).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local DAY = 86400000000

-- Every argument and stored value is checked: a number in range, else 0.
local function num(x, max)
  local n = tonumber(x)
  if n == nil or n ~= n or n < 0 then return 0 end
  if n > max then return max end
  return n
end

redis.call('ZADD', KEYS[5], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 10000000)
redis.call('PEXPIRE', KEYS[5], 60000)
local alive = redis.call('ZCARD', KEYS[5])

local LIMIT = 1e12
local seen_rpm, seen_tpm = num(ARGV[7], LIMIT), num(ARGV[9], LIMIT)
if seen_rpm > 0 then
  redis.call('HSET', KEYS[4], 'rpm', seen_rpm, 'rburst', num(ARGV[8], LIMIT))
end
if seen_tpm > 0 then
  redis.call('HSET', KEYS[4], 'tpm', seen_tpm, 'tburst', num(ARGV[10], LIMIT))
end
if seen_rpm > 0 or seen_tpm > 0 then
  -- A reading nobody refreshes for ten minutes is forgotten.
  redis.call('PEXPIRE', KEYS[4], 600000)
end
local l = redis.call('HMGET', KEYS[4], 'rpm', 'rburst', 'tpm', 'tburst')

-- The tighter of the configured ceiling and the latest reading; 0 is none.
local function min_set(a, b)
  if a > 0 and b > 0 then return math.min(a, b) end
  return math.max(a, b)
end
local function pick(cr, cb, lr, lb)
  local rate = min_set(num(cr, LIMIT), num(lr, LIMIT))
  local burst = min_set(num(cb, LIMIT), num(lb, LIMIT))
  if burst < 1 then burst = 1 end
  return rate, burst
end
local rrate, rburst = pick(ARGV[3], ARGV[4], l[1], l[2])
local trate, tburst = pick(ARGV[5], ARGV[6], l[3], l[4])
local function reply(granted, wait)
  return {granted, math.floor(wait), alive, tostring(rrate), tostring(rburst),
          tostring(trate), tostring(tburst)}
end

local pause = num(redis.call('GET', KEYS[3]), now + DAY)
if pause > now then return reply(0, pause - now) end

local resume = ARGV[11] == '1'
-- The GCRA: returns the state's base, the emission interval and the
-- earliest instant `cost` units pass.
local function gcra(key, rate, burst, cost)
  local T = 60000000 / rate
  local tau = T * burst
  local tat = tonumber(redis.call('GET', key))
  if tat == nil or tat ~= tat then
    if resume then tat = now + tau else tat = now end
  end
  -- Never more than a day ahead, whatever was stored.
  tat = math.min(tat, now + DAY)
  local base = math.max(tat, now)
  if cost > burst then return base, T, base end
  return base, T, base + cost * T - tau
end

local tokens = num(ARGV[2], LIMIT)
local at = now
local rbase, rT, tbase, tT
if rrate > 0 then
  local e
  rbase, rT, e = gcra(KEYS[1], rrate, rburst, 1)
  at = math.max(at, e)
end
if trate > 0 and tokens > 0 then
  local e
  tbase, tT, e = gcra(KEYS[2], trate, tburst, tokens)
  at = math.max(at, e)
end
local wait = at - now
if wait > num(ARGV[12], DAY) then return reply(0, wait) end

local function store(key, base, cost, T)
  local tat = math.max(base, at) + cost * T
  local ttl = math.ceil((tat - now) / 1000) + 60000
  redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
end
if rbase then store(KEYS[1], rbase, 1, rT) end
if tbase then store(KEYS[2], tbase, tokens, tT) end
return reply(1, wait)
