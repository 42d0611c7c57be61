-- Apply the policy's default reward to served requests whose feedback window passed without
-- feedback. Idempotent with reward.lua: both claim the request record's 'reward' field.
-- KEYS[1] pending zset, KEYS[2] arms hash, KEYS[3] per-segment counters hash (a request routed by
-- its segment, 'seg' on its record, also counts there), KEYS[4] linear model counters hash (a
-- request with a context vector, 'lx' on its record, adds its increments: lib/linear.lua)
-- ARGV[1] now, ARGV[2] default reward, ARGV[3] at most this many requests per call,
-- ARGV[4] request record key prefix
-- Returns the number of requests that took the default. Everything is checked before the first
-- write (a bad argument, or sums that would overflow, is an error that changes nothing).
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local function num(s) local x = tonumber(s) if x ~= nil and x == x and x >= -1e300 and x <= 1e300 then return x end end
local r, limit = num(ARGV[2]), int_arg(ARGV[3], 1, 100000)
if not num(ARGV[1]) or not r or not limit or type(ARGV[4]) ~= 'string' then
  return redis.error_reply('ERR expire: bad arguments')
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', num(ARGV[1])), 'LIMIT', 0, ARGV[3])
local takes, count, linear = {}, {}, {}
for _, rid in ipairs(due) do
  local record = ARGV[4] .. rid
  local served = redis.call('HGET', record, 'variant')
  if served and redis.call('HEXISTS', record, 'reward') == 0 then
    count[served] = (count[served] or 0) + 1
    local lx = KEYS[4] and linear_vector(redis.call('HGET', record, 'lx'))
    takes[rid] = {served, lx and linear_increments(lx, r)}
    if lx then linear[#linear + 1] = takes[rid] end
  end
end
if not linear_fits(KEYS[4], linear) then
  return redis.error_reply('ERR expire: the default reward would overflow the linear counters')
end
for served, n in pairs(count) do
  local sums = redis.call('HMGET', KEYS[2], served .. ':s', served .. ':ss')
  if not (num(tonumber(sums[1] or '0') + n * r) and num(tonumber(sums[2] or '0') + n * r * r)) then
    return redis.error_reply('ERR expire: the default reward would overflow the sums of ' .. served)
  end
end
local value, square = string.format('%.17g', r), string.format('%.17g', r * r)
local applied = 0
for _, rid in ipairs(due) do
  local take = takes[rid]
  if take then
    local served = take[1]
    redis.call('HSET', ARGV[4] .. rid, 'reward', value, 'rewarded_at', ARGV[1], 'defaulted', '1')
    redis.call('HINCRBY', KEYS[2], served .. ':n', 1)
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':s', value)
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':ss', square)
    local covariate = num(redis.call('HGET', ARGV[4] .. rid, 'cx') or '')
    if covariate and math.abs(covariate) <= 1e100 then
      redis.call('HINCRBYFLOAT', KEYS[2], served .. ':x', string.format('%.17g', covariate))
      redis.call('HINCRBYFLOAT', KEYS[2], served .. ':xx', string.format('%.17g', covariate * covariate))
      redis.call('HINCRBYFLOAT', KEYS[2], served .. ':xy', string.format('%.17g', covariate * r))
    end
    local segment = redis.call('HGET', ARGV[4] .. rid, 'seg')
    if segment and KEYS[3] then
      local cell = segment .. '|' .. served
      redis.call('HINCRBY', KEYS[3], cell .. ':n', 1)
      redis.call('HINCRBYFLOAT', KEYS[3], cell .. ':s', value)
      redis.call('HINCRBYFLOAT', KEYS[3], cell .. ':ss', square)
    end
    if take[2] then
      linear_add(KEYS[4], served, take[2])
    end
    applied = applied + 1
  end
  redis.call('ZREM', KEYS[1], rid)
end
return applied
