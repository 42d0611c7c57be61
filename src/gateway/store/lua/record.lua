-- Record a served prediction once: a request id that is already in use (a client reusing its
-- own x-request-id) is refused instead of overwriting the earlier record.
-- KEYS[1] request record, KEYS[2] arms hash, KEYS[3] decision log stream
-- ARGV[1] variant, ARGV[2] ttl seconds, ARGV[3] log max length ('0': no log entry),
-- ARGV[4] number of record field/value pairs, then those pairs, then the log's pairs
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local pairs_n = tonumber(ARGV[4])
local record = {'variant', ARGV[1]}
for i = 5, 4 + 2 * pairs_n do
  record[#record + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':req', 1)
if ARGV[3] ~= '0' then
  local entry = {}
  for i = 5 + 2 * pairs_n, #ARGV do
    entry[#entry + 1] = ARGV[i]
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
end
return 1
