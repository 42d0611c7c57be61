-- Apply a batch of rewards of one experiment, each exactly once by lib/reward_rule.lua's rule and
-- in the order sent (a request rewarded twice in one batch reads 'duplicate' the second time, as
-- it would one call later). One call for many items: a call per item was most of the router's
-- cost of a reward.
-- KEYS[1] arms hash, KEYS[2] feedback stream, KEYS[3] meta hash, KEYS[4] pending zset,
-- KEYS[5] KPI counters hash, KEYS[6] shadow-vs-served paired counts hash, KEYS[7] per-segment
-- counters hash, KEYS[8] the shadows' own rewards hash, KEYS[9] the linear model counters hash,
-- KEYS[10..] each item's request record, in the order of the items.
-- ARGV[1] now (unix seconds), ARGV[2] feedback stream max length, ARGV[3] default reward ('' for
-- none), ARGV[4] rewards allowed per unit in the window ('' for no quota), ARGV[5] quota key
-- prefix (quota and unit keys are built from their prefix and the record's unit, the experiment's
-- hash tag included), ARGV[6] quota window seconds, ARGV[7] the feedback stream's byte budget (as
-- in record.lua), ARGV[8] the per-unit aggregates' key prefix ('' the policy keeps none),
-- ARGV[9] seconds those counters live after an update ('' without a prefix);
-- then 5 per item: variant, reward, label JSON ('' for none), '1' when the reward was made from
-- the label and shadows may earn ('0' or '' otherwise), the prediction record's nonce from the
-- reward's token ('' for a token without one).
-- Returns one {outcome, traceparent} per item (lib/reward_rule.lua). An item whose own arguments
-- are bad (a reward that is not a finite number) is 'invalid', nothing of it written, and the
-- others apply; bad settings make every item 'invalid' and arguments that do not match the keys
-- an error, nothing written. Every argument is checked before the first write.
-- Counts must be digits (Redis parses them more strictly than Lua's tonumber).
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local SHARED_KEYS, SHARED_ARGS, ITEM_ARGS = 9, 9, 5
local n = #KEYS - SHARED_KEYS
if n < 1 or #ARGV ~= SHARED_ARGS + ITEM_ARGS * n then
  return redis.error_reply('ERR reward.lua: ' .. SHARED_ARGS .. ' arguments and ' .. ITEM_ARGS .. ' per request key expected')
end
local K = {arms = KEYS[1], feedback = KEYS[2], meta = KEYS[3], pending = KEYS[4], kpis = KEYS[5], paired = KEYS[6],
           segments = KEYS[7], shadow_rewards = KEYS[8], linear = KEYS[9]}
local C = {now = ARGV[1], now_n = reward_num(ARGV[1]), maxlen = int_arg(ARGV[2], 0, 2^31), default = ARGV[3],
           quota = ARGV[4], quota_prefix = ARGV[5], window = int_arg(ARGV[6], 1, 2^31), budget = int_arg(ARGV[7], 0, 2^50)}
local results = {}
local settings_ok = C.now_n and C.maxlen and C.window and C.budget and (C.default == '' or reward_num(C.default))
  and (C.quota == '' or int_arg(C.quota, 0, 2^50))
if settings_ok and ARGV[8] ~= '' then
  C.unit_prefix, C.unit_ttl = ARGV[8], int_arg(ARGV[9], 1, 2^31)
  settings_ok = C.unit_ttl ~= nil
end
local item_ok = {}
for i = 1, n do
  local a = SHARED_ARGS + ITEM_ARGS * (i - 1)
  local from_label = ARGV[a + 4]
  item_ok[i] = settings_ok and reward_num(ARGV[a + 2]) ~= nil and (from_label == '' or from_label == '0' or from_label == '1')
end
for i = 1, n do
  local a = SHARED_ARGS + ITEM_ARGS * (i - 1)
  if item_ok[i] then
    results[i] = reward_apply(K, C, KEYS[SHARED_KEYS + i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  else
    results[i] = {'invalid', ''}
  end
end
return results
