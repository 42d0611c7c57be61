-- Set one field of an experiment's meta hash and record why, in one step.
-- KEYS[1] meta hash, KEYS[2] history list; ARGV[1] field, ARGV[2] value, ARGV[3] entry (JSON)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
