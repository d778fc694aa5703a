-- After Redis restarted empty: raise a counter to at least what this replica last saw in it.
-- KEYS[1]: the hash; ARGV: kind ("f" or "r"), the current bucket, requests, tokens, time to
-- live in ms (0: forever), the oldest bucket start that still counts.
local key = KEYS[1]
local rolling = ARGV[1] ~= 'f'
local r, t = held(key, rolling, tonumber(ARGV[6]), false)
local want_r, want_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local rf, tf = 'r', 't'
if rolling then
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
