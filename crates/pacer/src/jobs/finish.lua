-- Records requests' results, once each: the first result of a request wins
-- (a request reclaimed from a slow worker may be answered twice), and its
-- stream entry is acknowledged and deleted. When the last request of the
-- job is recorded, every key of the job is set to expire after the time
-- to keep a finished job.
--
-- KEYS: 1 meta, 2 results, 3 work, 4 requests, 5 deliveries, 6 errors
-- ARGV: 1 group, 2 seconds to keep a finished job, then for each result:
--       index, entry id ('' if none), value, failed (1/0), prompt tokens,
--       completion tokens, cost in USD
-- Returns: for each result 1 if it was new, else 0; then finished, total.
local out = {}
local i = 3
while i <= #ARGV do
  local idx, id, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[2], idx, value) == 1 then
    table.insert(out, 1)
    redis.call('HINCRBY', KEYS[1], 'finished', 1)
    if ARGV[i + 3] == '1' then
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
    end
    redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[i + 4])
    redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[i + 5])
    redis.call('HINCRBYFLOAT', KEYS[1], 'cost_usd', ARGV[i + 6])
  else
    table.insert(out, 0)
  end
  if id ~= '' then
    redis.call('XACK', KEYS[3], ARGV[1], id)
    redis.call('XDEL', KEYS[3], id)
  end
  i = i + 7
end
local m = redis.call('HMGET', KEYS[1], 'finished', 'total')
local finished, total = tonumber(m[1]) or 0, tonumber(m[2]) or -1
if finished >= total and total >= 0 then
  for k = 1, 6 do
    redis.call('EXPIRE', KEYS[k], ARGV[2])
  end
end
table.insert(out, finished)
table.insert(out, total)
return out
