-- Add a challenger: record it, reopen exploration (the champion keeps its title until a new
-- promotion) and log the decision, in one step.
-- KEYS[1] dynamic variants hash, KEYS[2] meta hash, KEYS[3] history list
-- ARGV[1] variant name, ARGV[2] variant JSON, ARGV[3] history entry JSON, ARGV[4] now
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local status = redis.call('HGET', KEYS[2], 'status') or 'exploring'
if status == 'promoted' then
  redis.call('HSET', KEYS[2], 'status', 'exploring', 'changed_at', ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
