-- Apply one reward exactly once. Claiming the request id and updating the posterior happen in
-- one script, so a retried or concurrent reward can never count twice. A label rides along into
-- the feedback stream, which the retrainer joins with the decision log.
-- KEYS[1] request record, KEYS[2] arms hash, KEYS[3] feedback stream, KEYS[4] meta hash
-- ARGV[1] variant, ARGV[2] reward, ARGV[3] now (unix seconds), ARGV[4] label JSON ('' for none),
-- ARGV[5] feedback stream max length
-- Returns {outcome, the prediction's traceparent} (the reward's span links to it).
local served = redis.call('HGET', KEYS[1], 'variant')
if not served then
  return {'unknown', ''}
end
if served ~= ARGV[1] then
  return {'mismatch', ''}
end
if redis.call('HSETNX', KEYS[1], 'reward', ARGV[2]) == 0 then
  return {'duplicate', ''}
end
redis.call('HSET', KEYS[1], 'rewarded_at', ARGV[3])
local r = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[2], served .. ':n', 1)
redis.call('HINCRBYFLOAT', KEYS[2], served .. ':s', ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[2], served .. ':ss', string.format('%.17g', r * r))
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'label', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'labels_since_retrain', 1)
end
local rid = string.match(KEYS[1], ':req:(.*)$')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
  'rid', rid, 't', ARGV[3], 'variant', served, 'reward', ARGV[2], 'label', ARGV[4])
return {'accepted', redis.call('HGET', KEYS[1], 'tp') or ''}
