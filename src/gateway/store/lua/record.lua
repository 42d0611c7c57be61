-- Record a served prediction once: a request id that is already in use (a client reusing its
-- own x-request-id) is refused instead of overwriting the earlier record.
-- KEYS[1] request record, KEYS[2] arms hash, KEYS[3] decision log stream, KEYS[4] pending zset
-- ARGV[1] variant, ARGV[2] ttl seconds, ARGV[3] log max length ('0': no log entry),
-- ARGV[4] reward deadline (unix seconds; '' when the policy has no default reward),
-- ARGV[5] this call's nonce: a retry of a call whose reply was lost finds its own record and
-- succeeds, where another request reusing the id is refused,
-- ARGV[6] number of record field/value pairs, then those pairs, then the log's pairs
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'nonce') == ARGV[5] then
    return 1
  end
  return 0
end
local pairs_n = tonumber(ARGV[6])
local record = {'variant', ARGV[1], 'nonce', ARGV[5]}
for i = 7, 6 + 2 * pairs_n do
  record[#record + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':req', 1)
if ARGV[4] ~= '' then
  -- The sweeper applies the default reward to what is still here after the deadline.
  local rid = string.match(KEYS[1], ':req:(.*)$')
  redis.call('ZADD', KEYS[4], ARGV[4], rid)
end
if ARGV[3] ~= '0' then
  local entry = {}
  for i = 7 + 2 * pairs_n, #ARGV do
    entry[#entry + 1] = ARGV[i]
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
end
return 1
