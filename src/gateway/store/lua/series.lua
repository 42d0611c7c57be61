-- Append one point to an experiment's time series, at most once per interval across all router
-- replicas: the first replica to take the interval's lock writes, the others skip.
-- KEYS[1] lock, KEYS[2] series stream; ARGV[1] interval ms, ARGV[2] max length, ARGV[3] point JSON
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'p', ARGV[3])
return 1
