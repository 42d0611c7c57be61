-- Take the retraining turn when enough new labels arrived: reset the counter and hold a lock,
-- so that one retraining runs per experiment however many router replicas notice. The lock
-- holds its owner's token: only the owner renews it (a run longer than the ttl keeps it) or
-- releases it (see retrain_lock.lua).
-- KEYS[1] meta hash, KEYS[2] lock; ARGV[1] labels needed (0: claim regardless), ARGV[2] lock ttl ms,
-- ARGV[3] owner token
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
if not int_arg(ARGV[1], 0, 2^50) or not int_arg(ARGV[2], 1, 2^40) or ARGV[3] == nil or ARGV[3] == '' then
  return redis.error_reply('ERR claim_retrain: bad arguments')
end
local pending = tonumber(redis.call('HGET', KEYS[1], 'labels_since_retrain') or '0')
if pending < tonumber(ARGV[1]) then
  return 0
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'labels_since_retrain', 0)
return 1
