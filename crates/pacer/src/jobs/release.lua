-- Hands requests a worker took but will not finish (it is stopping) back
-- to the job at once, rather than after their lease: each entry is
-- acknowledged, deleted and added anew at the stream's end, and the
-- delivery it used is given back. A request already answered is left be.
--
-- KEYS: 1 work, 2 deliveries, 3 results
-- ARGV: 1 group, then pairs of index and entry id
for i = 2, #ARGV, 2 do
  local idx, id = ARGV[i], ARGV[i + 1]
  local acked = redis.call('XACK', KEYS[1], ARGV[1], id)
  if acked == 1 then
    redis.call('XDEL', KEYS[1], id)
    if redis.call('HEXISTS', KEYS[3], idx) == 0 then
      redis.call('XADD', KEYS[1], '*', 'i', idx)
      redis.call('HINCRBY', KEYS[2], idx, -1)
    end
  end
end
return 1
