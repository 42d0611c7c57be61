-- Record a served prediction once: a request id that is already in use (a client reusing its
-- own x-request-id) is refused instead of overwriting the earlier record.
-- KEYS[1] request record, KEYS[2] arms hash, KEYS[3] decision log stream, KEYS[4] pending zset,
-- KEYS[5] (optional) the request's unit's aggregate counters hash (the policy's `aggregates`):
-- the request is counted there ('n') with its record, so once per request id, a spooled record
-- once when replayed, and a refused or failed request never (store.turn_calls only reads it)
-- ARGV[1] variant, ARGV[2] ttl seconds, ARGV[3] log max length ('0': no log entry),
-- ARGV[4] reward deadline (unix seconds; '' when the policy has no default reward),
-- ARGV[5] this call's nonce: a retry of a call whose reply was lost finds its own record and
-- succeeds, where another request reusing the id is refused,
-- ARGV[6] when the sweeper may apply the default ('' for the deadline): later than the
-- deadline for a record replayed from a spool, whose on-time feedback may still be spooled,
-- ARGV[7] the decision log's byte budget: with entries of this one's size, the log keeps at most
-- budget / size of them (and never more than ARGV[3]), so it stays within about twice the budget,
-- ARGV[8] number of record field/value pairs,
-- ARGV[9] seconds the unit's counters live after this request (with KEYS[5]; '' without it),
-- then the record's pairs, then the log's pairs. A log field 'agg' with an empty value is filled,
-- with KEYS[5], with the unit's counters as they stand before this request is counted: 'c1:' and
-- n,ln,ls,rn,rs (empty: unset), the form gateway.learning.aggregates reads (no variant took the
-- aggregates, so the router read none; these are what training gets, never a later value).
-- Every argument is checked before the first write: a bad one is an error and changes nothing.
-- Numbers Redis will parse are written as digits (counts) or re-formatted by Lua (times): Lua's
-- tonumber takes ' 5', '1e3' or '0x10', which Redis refuses once earlier writes are done.
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local function num(s) local x = tonumber(s) if x ~= nil and x == x and x >= -1e300 and x <= 1e300 then return x end end
-- Lua's unpack takes about 8,000 values: more would fail after the first writes.
local MAX_VALUES = 7000
-- The record's and the log's pairs start here.
local FIRST = 10
local ttl, maxlen, budget, pairs_n = int_arg(ARGV[2], 1, 2^31), int_arg(ARGV[3], 0, 2^31), int_arg(ARGV[7], 0, 2^50),
  int_arg(ARGV[8], 0, MAX_VALUES)
local deadline, sweep = ARGV[4] ~= nil and ARGV[4] ~= '' and num(ARGV[4]), ARGV[6] ~= nil and ARGV[6] ~= '' and num(ARGV[6])
-- The unit's ttl exactly when its key is given.
local unit_ttl = KEYS[5] and int_arg(ARGV[9], 1, 2^31)
if not ttl or not maxlen or not budget or not pairs_n or (ARGV[4] ~= '' and not deadline) or (ARGV[6] ~= '' and not sweep)
    or (KEYS[5] and not unit_ttl) or (not KEYS[5] and ARGV[9] ~= '') or #KEYS > 5
    or #ARGV < FIRST - 1 + 2 * pairs_n or #ARGV > FIRST - 1 + MAX_VALUES or (#ARGV - FIRST + 1 - 2 * pairs_n) % 2 ~= 0
    or (maxlen > 0 and #ARGV == FIRST - 1 + 2 * pairs_n) then
  return redis.error_reply('ERR record: bad arguments')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'nonce') == ARGV[5] then
    return 1
  end
  return 0
end
-- Read before the request is counted below.
local fill_at, fill = nil, nil
if KEYS[5] and maxlen > 0 then
  for i = FIRST + 2 * pairs_n, #ARGV - 1, 2 do
    if ARGV[i] == 'agg' and ARGV[i + 1] == '' then
      local c = redis.call('HMGET', KEYS[5], 'n', 'ln', 'ls', 'rn', 'rs')
      for j = 1, 5 do
        if not c[j] then c[j] = '' end
      end
      fill_at, fill = i + 1, 'c1:' .. table.concat(c, ',')
      break
    end
  end
end
local record = {'variant', ARGV[1], 'nonce', ARGV[5]}
if ARGV[4] ~= '' then
  -- The on-time check of reward.lua reads the deadline here, not the sweeper's later time.
  record[#record + 1] = 'dl'
  record[#record + 1] = string.format('%.17g', deadline)
end
for i = FIRST, FIRST - 1 + 2 * pairs_n do
  record[#record + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(record))
redis.call('EXPIRE', KEYS[1], string.format('%d', ttl))
redis.call('HINCRBY', KEYS[2], ARGV[1] .. ':req', 1)
if unit_ttl then
  redis.call('HINCRBY', KEYS[5], 'n', 1)
  redis.call('EXPIRE', KEYS[5], string.format('%d', unit_ttl))
end
if ARGV[4] ~= '' then
  -- The sweeper applies the default reward to what is still here after this time.
  local rid = string.match(KEYS[1], ':req:(.*)$')
  redis.call('ZADD', KEYS[4], string.format('%.17g', sweep or deadline), rid)
end
if maxlen > 0 then
  local entry, bytes = {}, 0
  for i = FIRST + 2 * pairs_n, #ARGV do
    local value = i == fill_at and fill or ARGV[i]
    entry[#entry + 1] = value
    bytes = bytes + #value
  end
  local keep = math.max(1, math.min(maxlen, math.floor(budget / math.max(bytes, 1))))
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', string.format('%d', keep), '*', unpack(entry))
end
return 1
