-- What a counter holds: {requests, tokens}. KEYS[1]: the hash; ARGV[1]: kind ("f" or "r");
-- ARGV[2]: for a rolling window, the oldest bucket start that still counts.
local key = KEYS[1]
if ARGV[1] == 'f' then
  local v = redis.call('HMGET', key, 'r', 't')
  return {tonumber(v[1] or '0'), tonumber(v[2] or '0')}
end
local cutoff = tonumber(ARGV[2])
local r, t = 0, 0
local all = redis.call('HGETALL', key)
for k = 1, #all, 2 do
  if tonumber(string.sub(all[k], 3)) >= cutoff then
    if string.sub(all[k], 1, 1) == 'r' then
      r = r + tonumber(all[k + 1])
    else
      t = t + tonumber(all[k + 1])
    end
  end
end
return {r, t}
