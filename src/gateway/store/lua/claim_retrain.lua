-- Take the retraining turn when enough new labels arrived: reset the counter and hold a lock,
-- so that one retraining runs per experiment however many router replicas notice.
-- KEYS[1] meta hash, KEYS[2] lock; ARGV[1] labels needed (0: claim regardless), ARGV[2] lock ttl ms
local pending = tonumber(redis.call('HGET', KEYS[1], 'labels_since_retrain') or '0')
if pending < tonumber(ARGV[1]) then
  return 0
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'labels_since_retrain', 0)
return 1
