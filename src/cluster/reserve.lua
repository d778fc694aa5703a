-- Reserve one request in every counter it counts in, or none (SPEC 5.1): Freeway's shared
-- ledger, run atomically by Redis, one round trip per reservation.
--
-- KEYS: the cooldown keys to honour (ARGV[2] of them), then one hash per counter.
-- ARGV[1] = now (ms), ARGV[2] = how many cooldown keys, ARGV[3] = tokens asked;
-- then per counter, six values: kind ("f": fixed window, fields r and t; "r": rolling window,
-- fields r:<bucket start> and t:<bucket start>), the bucket this request goes to, the oldest
-- bucket start that still counts, the request cap and the token cap (-1: none), and the key's
-- time to live in ms (0: forever).
--
-- Answers {1, r1, t1, r2, t2, ...} (what each counter held before this request) when granted;
-- {0, j, r, t, oldest} when counter j is full (oldest: its oldest counting bucket, rolling
-- windows); {2, i, value} when cooldown key i is set (value: "<until ms> <reason>").
local nc = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
for i = 1, nc do
  local v = redis.call('GET', KEYS[i])
  if v then
    return {2, i, v}
  end
end
local n = #KEYS - nc
local used = {}
for j = 1, n do
  local key = KEYS[nc + j]
  local b = 4 + (j - 1) * 6
  local cutoff = tonumber(ARGV[b + 2])
  local rcap = tonumber(ARGV[b + 3])
  local tcap = tonumber(ARGV[b + 4])
  local r, t, oldest = held(key, ARGV[b] ~= 'f', cutoff, true)
  if (rcap >= 0 and r + 1 > rcap) or (tcap >= 0 and t + want > tcap) then
    return {0, j, r, t, oldest}
  end
  used[2 * j - 1] = r
  used[2 * j] = t
end
for j = 1, n do
  local key = KEYS[nc + j]
  local b = 4 + (j - 1) * 6
  local ttl = tonumber(ARGV[b + 5])
  if ARGV[b] == 'f' then
    redis.call('HINCRBY', key, 'r', 1)
    redis.call('HINCRBY', key, 't', want)
  else
    redis.call('HINCRBY', key, 'r:' .. ARGV[b + 1], 1)
    redis.call('HINCRBY', key, 't:' .. ARGV[b + 1], want)
  end
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end
local out = {1}
for k = 1, 2 * n do
  out[k + 1] = used[k]
end
return out
