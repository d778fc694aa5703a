-- After Redis was away (it may have restarted empty): raise a counter to at least what this
-- replica last saw in it. KEYS[1]: the hash; ARGV: kind ("f" or "r"), the current bucket,
-- requests, tokens, time to live in ms (0: forever).
local key = KEYS[1]
local r, t = 0, 0
if ARGV[1] == 'f' then
  local v = redis.call('HMGET', key, 'r', 't')
  r = tonumber(v[1] or '0')
  t = tonumber(v[2] or '0')
else
  local all = redis.call('HGETALL', key)
  for k = 1, #all, 2 do
    if string.sub(all[k], 1, 1) == 'r' then
      r = r + tonumber(all[k + 1])
    else
      t = t + tonumber(all[k + 1])
    end
  end
end
local want_r, want_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local rf, tf = 'r', 't'
if ARGV[1] ~= 'f' then
  rf = 'r:' .. ARGV[2]
  tf = 't:' .. ARGV[2]
end
if r < want_r then
  redis.call('HINCRBY', key, rf, want_r - r)
end
if t < want_t then
  redis.call('HINCRBY', key, tf, want_t - t)
end
if tonumber(ARGV[5]) > 0 then
  redis.call('PEXPIRE', key, ARGV[5])
end
return 1
