-- Hands up to COUNT requests of a shared job to one worker: first those
-- whose lease ran out (their worker died or stalled), then new ones.
-- Atomic, so a request is never handed to two workers by one call; a
-- request already answered (a worker that finished it late) is dropped.
--
-- KEYS: 1 meta, 2 work (stream), 3 requests, 4 results, 5 deliveries, 6 errors
-- ARGV: 1 group, 2 consumer, 3 count, 4 lease ms, 5 most deliveries
-- Returns: total (-2 if the job is gone), finished, stop ('' if none), then for each request taken
-- its entry id, index, deliveries, request JSON, and its last error if it
-- has been delivered more than the most deliveries ('' otherwise).
local meta = redis.call('HMGET', KEYS[1], 'total', 'finished', 'stop')
local out = { tonumber(meta[1]) or -1, tonumber(meta[2]) or 0, meta[3] or '' }
if not meta[1] then
  -- The job is gone (expired, deleted, or a Redis restarted without
  -- persistence): say so rather than read a stream that is not there.
  out[1] = -2
  return out
end
if meta[3] then
  return out
end
local n = tonumber(ARGV[3])
local most = tonumber(ARGV[5])
local entries = {}
local cursor = redis.call('HGET', KEYS[1], 'claim_cursor') or '0-0'
local claimed = redis.call('XAUTOCLAIM', KEYS[2], ARGV[1], ARGV[2], ARGV[4], cursor, 'COUNT', n)
redis.call('HSET', KEYS[1], 'claim_cursor', claimed[1])
for _, e in ipairs(claimed[2]) do
  table.insert(entries, e)
end
if #entries < n then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n - #entries,
    'STREAMS', KEYS[2], '>')
  if fresh then
    for _, e in ipairs(fresh[1][2]) do
      table.insert(entries, e)
    end
  end
end
for _, e in ipairs(entries) do
  local id = e[1]
  local fields = e[2]
  local idx = nil
  if fields then
    for i = 1, #fields, 2 do
      if fields[i] == 'i' then idx = fields[i + 1] end
    end
  end
  if idx == nil or redis.call('HEXISTS', KEYS[4], idx) == 1 then
    redis.call('XACK', KEYS[2], ARGV[1], id)
    redis.call('XDEL', KEYS[2], id)
  else
    local d = redis.call('HINCRBY', KEYS[5], idx, 1)
    local err = ''
    if d > most then
      err = redis.call('HGET', KEYS[6], idx) or 'no answer: every worker it was handed to went away before answering'
    end
    table.insert(out, id)
    table.insert(out, idx)
    table.insert(out, d)
    table.insert(out, redis.call('HGET', KEYS[3], idx) or '')
    table.insert(out, err)
  end
end
return out
