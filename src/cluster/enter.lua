-- A client key's request in flight, counted across replicas (its `concurrent` limit).
-- KEYS[1]: the key's hash of requests in flight per replica; KEYS[2]: the heartbeat set.
-- ARGV[1]: this replica; ARGV[2]: the limit; ARGV[3]: replicas that beat before this (ms) are
-- gone, and so are their requests.
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for k = 1, #all, 2 do
  local beat = redis.call('ZSCORE', KEYS[2], all[k])
  if all[k] ~= ARGV[1] and (not beat or tonumber(beat) < tonumber(ARGV[3])) then
    redis.call('HDEL', KEYS[1], all[k])
  else
    n = n + math.max(0, tonumber(all[k + 1]))
  end
end
if n + 1 > tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
