-- Renews a worker's leases: each entry it still owns has its idle time
-- reset (XCLAIM ... JUSTID does not count a delivery). An entry another
-- worker reclaimed meanwhile is not taken back.
--
-- KEYS: 1 work
-- ARGV: 1 group, 2 consumer, then entry ids
-- Returns the ids no longer owned.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
