-- Set one field of an experiment's meta hash and record why, in one step.
-- KEYS[1] meta hash, KEYS[2] history list; ARGV[1] field, ARGV[2] value, ARGV[3] entry (JSON),
-- ARGV[4] '1': do nothing when the field already holds the value (one entry per change, however
-- many replicas notice it at once)
-- Returns 1 when it was set, 0 when it was already so.
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
