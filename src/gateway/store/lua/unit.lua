-- Per-unit aggregates (the policy's `aggregates`): read a unit's counters as they stand before
-- this request, then count the request, in one step. What is read is what the request is served
-- and logged with; its own label can only arrive later (reward.lua), so it never leaks in.
-- KEYS[1] the unit's counters hash: n requests, ln labels (0/1), ls their sum, rn rewards, rs their sum
-- ARGV[1] seconds the counters live after the unit's last request or feedback
-- Every argument is checked before the first write.
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local ttl = int_arg(ARGV[1], 1, 2^31)
if not ttl or #ARGV ~= 1 then
  return redis.error_reply('ERR unit: bad arguments')
end
local before = redis.call('HMGET', KEYS[1], 'n', 'ln', 'ls', 'rn', 'rs')
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('EXPIRE', KEYS[1], string.format('%d', ttl))
return before
