-- Append one point to an experiment's time series, at most once per interval across all router
-- replicas: the first replica to take the interval's lock writes, the others skip.
-- KEYS[1] lock, KEYS[2] series stream; ARGV[1] interval ms, ARGV[2] max length, ARGV[3] point JSON
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
if not int_arg(ARGV[1], 1, 2^40) or not int_arg(ARGV[2], 1, 2^31) or type(ARGV[3]) ~= 'string' then
  return redis.error_reply('ERR series: bad arguments')
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'p', ARGV[3])
return 1
