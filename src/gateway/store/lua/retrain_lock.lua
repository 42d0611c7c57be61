-- Renew (ARGV[2] > 0: the new ttl in ms) or release (ARGV[2] = '0') the retraining lock, only
-- for its owner: a run that outlived its lock cannot extend or free another run's.
-- KEYS[1] lock; ARGV[1] owner token, ARGV[2] ttl ms or '0'. Returns 1 if done, 0 if not the owner.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
