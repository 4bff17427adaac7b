-- After an answer: the token reservation settled with the real usage (a
-- refund or an extra charge on the token TAT), and a 429's pause published
-- for everyone. Redis's clock only.
--
-- KEYS: 1 token TAT, 2 pause-until
-- ARGV: 1 tokens used minus reserved (signed), 2 tpm the reservation was
--       made at, 3 its token burst, 4 pause, microseconds (0: none)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local DAY = 86400000000
local LIMIT = 1e12

local function num(x, min, max)
  local n = tonumber(x)
  if n == nil or n ~= n then return 0 end
  return math.max(min, math.min(max, n))
end

local delta = num(ARGV[1], -LIMIT, LIMIT)
local tpm = num(ARGV[2], 0, LIMIT)
local burst = num(ARGV[3], 1, LIMIT)
if delta ~= 0 and tpm > 0 then
  local T = 60000000 / tpm
  local tau = T * burst
  local tat = tonumber(redis.call('GET', KEYS[1]))
  if tat == nil or tat ~= tat then tat = now end
  tat = math.min(tat, now + DAY)
  if delta > 0 then
    -- Never more than a full bucket of debt for one answer.
    tat = math.max(tat, now) + math.min(delta * T, tau)
  elseif tat > now then
    tat = math.max(now, tat + delta * T)
  end
  local ttl = math.ceil((tat - now) / 1000) + 60000
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
end

local pause = num(ARGV[4], 0, 3600000000)
if pause > 0 then
  local untl = now + pause
  local cur = num(redis.call('GET', KEYS[2]), 0, now + DAY)
  if untl > cur then
    redis.call('SET', KEYS[2], string.format('%.0f', untl), 'PX',
      math.ceil(pause / 1000) + 1000)
  end
end
return 1
