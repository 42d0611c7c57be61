-- Apply the policy's default reward to served requests whose feedback window passed without
-- feedback. Idempotent with reward.lua: both claim the request record's 'reward' field.
-- KEYS[1] pending zset, KEYS[2] arms hash
-- ARGV[1] now, ARGV[2] default reward, ARGV[3] at most this many requests per call,
-- ARGV[4] request record key prefix
-- Returns the number of requests that took the default.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local applied = 0
local r = tonumber(ARGV[2])
for _, rid in ipairs(due) do
  local record = ARGV[4] .. rid
  local served = redis.call('HGET', record, 'variant')
  if served and redis.call('HSETNX', record, 'reward', ARGV[2]) == 1 then
    redis.call('HSET', record, 'rewarded_at', ARGV[1], 'defaulted', '1')
    redis.call('HINCRBY', KEYS[2], served .. ':n', 1)
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':s', ARGV[2])
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':ss', string.format('%.17g', r * r))
    applied = applied + 1
  end
  redis.call('ZREM', KEYS[1], rid)
end
return applied
