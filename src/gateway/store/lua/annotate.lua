-- Set one field of an experiment's meta hash and record why, in one step.
-- KEYS[1] meta hash, KEYS[2] history list; ARGV[1] field, ARGV[2] value, ARGV[3] entry (JSON),
-- ARGV[4] '1': do nothing when the field already holds the value (one entry per change, however
-- many replicas notice it at once)
-- Returns 1 when it was set, 0 when it was already so.
-- ARGV[5] the history's length cap: older entries are trimmed (checked before any write).
-- ARGV[6] '1': do nothing unless the field holds ARGV[7] now (an absent field holds ''): a
-- change computed from a value another replica has changed since is not applied over it.
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local keep = int_arg(ARGV[5], 1, 2^31)
if not keep then
  return redis.error_reply('ERR annotate: bad history cap')
end
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return 0
end
if ARGV[6] == '1' and (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= (ARGV[7] or '') then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], string.format('%d', -keep), -1)
return 1
