-- What a counter holds: {requests, tokens}. KEYS[1]: the hash; ARGV[1]: kind ("f" or "r");
-- ARGV[2]: for a rolling window, the oldest bucket start that still counts.
local r, t = held(KEYS[1], ARGV[1] ~= 'f', tonumber(ARGV[2]), false)
return {r, t}
