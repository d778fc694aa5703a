-- What a counter holds (prefixed to the scripts that read counters): requests, tokens and,
-- for a rolling window, its oldest bucket that still counts (-1: none). A rolling window's
-- fields are r:<bucket start> and t:<bucket start>; buckets older than `cutoff` do not count,
-- and are deleted when `prune`. A fixed counter's fields are r and t.
local function held(key, rolling, cutoff, prune)
  if not rolling then
    local v = redis.call('HMGET', key, 'r', 't')
    return tonumber(v[1] or '0'), tonumber(v[2] or '0'), -1
  end
  local r, t, oldest = 0, 0, -1
  local all = redis.call('HGETALL', key)
  for k = 1, #all, 2 do
    local field = all[k]
    local start = tonumber(string.sub(field, 3))
    if start < cutoff then
      if prune then
        redis.call('HDEL', key, field)
      end
    else
      if string.sub(field, 1, 1) == 'r' then
        r = r + tonumber(all[k + 1])
      else
        t = t + tonumber(all[k + 1])
      end
      if oldest < 0 or start < oldest then
        oldest = start
      end
    end
  end
  return r, t, oldest
end
