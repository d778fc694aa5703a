-- Cool a scope down until ARGV[1] (ms) for ARGV[2] (the reason), the key expiring after
-- ARGV[3] ms; a later cooldown already set stays.
local v = redis.call('GET', KEYS[1])
if v then
  local till = tonumber(string.match(v, '^(%d+)'))
  if till and till >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
