-- Change an experiment's status and champion only if its status is still what the caller saw,
-- and record the decision in the same step, so two router replicas never both decide.
-- KEYS[1] meta hash, KEYS[2] history list
-- ARGV[1] expected status ('*' for any), ARGV[2] new status, ARGV[3] new champion ('' keeps it,
-- '-' clears it), ARGV[4] history entry (JSON), ARGV[5] now, ARGV[6] frozen weights JSON ('' clears),
-- ARGV[7] expected champion ('' for any)
-- ARGV[8] the history's length cap: older entries are trimmed (checked before any write).
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local keep = int_arg(ARGV[8], 1, 2^31)
if not keep then
  return redis.error_reply('ERR transition: bad history cap')
end
local status = redis.call('HGET', KEYS[1], 'status') or 'exploring'
if ARGV[1] ~= '*' and status ~= ARGV[1] then
  return 0
end
local champion = redis.call('HGET', KEYS[1], 'champion') or ''
if ARGV[7] ~= '' and champion ~= ARGV[7] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'changed_at', ARGV[5])
if ARGV[3] == '-' then
  redis.call('HDEL', KEYS[1], 'champion')
  if champion ~= '' then redis.call('HSET', KEYS[1], 'previous_champion', champion) end
elseif ARGV[3] ~= '' and ARGV[3] ~= champion then
  redis.call('HSET', KEYS[1], 'champion', ARGV[3])
  if champion ~= '' then redis.call('HSET', KEYS[1], 'previous_champion', champion) end
end
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], 'frozen_weights')
else
  redis.call('HSET', KEYS[1], 'frozen_weights', ARGV[6])
end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], string.format('%d', -keep), -1)
return 1
