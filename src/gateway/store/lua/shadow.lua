-- Record a shadow variant's answer to a live request, once: on the request's record (so the
-- label, when it comes, scores it as it scores the served variant), and in the shadow log. If the
-- label came first, the answer is scored now, by the same rule (lib/scoring.lua).
-- KEYS[1] request record, KEYS[2] KPI counters hash, KEYS[3] paired counts hash,
-- KEYS[4] shadow log stream, KEYS[5] feedback stream, KEYS[6] the shadows' own rewards hash,
-- KEYS[7] meta hash, KEYS[8] arms hash
-- ARGV[1] shadow variant, ARGV[2] prediction JSON, ARGV[3] scores JSON ('' for none), ARGV[4] now,
-- ARGV[5] log max length, ARGV[6] log byte budget, ARGV[7] feedback max length, ARGV[8] its budget
-- Returns gone (the record expired or never was) | duplicate | recorded | scored.
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local log_max, log_budget = int_arg(ARGV[5], 1, 2^31), int_arg(ARGV[6], 0, 2^50)
local fb_max, fb_budget = int_arg(ARGV[7], 1, 2^31), int_arg(ARGV[8], 0, 2^50)
if not log_max or not log_budget or not fb_max or not fb_budget or not tonumber(ARGV[4])
    or not string.match(ARGV[1], '^[A-Za-z0-9][A-Za-z0-9_.-]*$') then
  return redis.error_reply('ERR shadow: bad arguments')
end
local served = redis.call('HGET', KEYS[1], 'variant')
if not served then
  return 'gone'
end
if redis.call('HSETNX', KEYS[1], 'sh:' .. ARGV[1], ARGV[2]) == 0 then
  return 'duplicate'
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'shs:' .. ARGV[1], ARGV[3])
end
local rid = string.match(KEYS[1], ':req:(.*)$')
local t = string.format('%.17g', tonumber(ARGV[4]))
local function maxlen(limit, budget, ...)
  local bytes = 0
  for _, v in ipairs({...}) do bytes = bytes + #v end
  return string.format('%d', math.max(1, math.min(limit, math.floor(budget / math.max(bytes, 1)))))
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen(log_max, log_budget, rid, ARGV[2], ARGV[3]), '*',
  'rid', rid, 't', t, 'variant', ARGV[1], 'served', served, 'pred', ARGV[2], 'scores', ARGV[3])

-- Feedback already applied (on time: a defaulted request's late label is not scored for the
-- served variant either).
local label = redis.call('HGET', KEYS[1], 'label')
if not label or redis.call('HGET', KEYS[1], 'defaulted') == '1' then
  return 'recorded'
end
local rows = score_rows(label, ARGV[2])
if not rows then
  return 'recorded'
end
local shadow_correct = score_count(KEYS[2], ARGV[1], rows)
if KEYS[8] and redis.call('HGET', KEYS[1], 'lr') == '1' then
  -- The served variant's reward came from this label: the shadow earns its own the same way.
  score_shadow_reward(KEYS[6], KEYS[8], KEYS[7], ARGV[1], shadow_correct)
end
local served_rows = score_rows(label, redis.call('HGET', KEYS[1], 'pred') or '')
if served_rows then
  score_pair(KEYS[3], ARGV[1], served, shadow_correct, score_correct(served_rows))
end
-- The window KPIs read the feedback stream: this answer's entry, marked as a shadow's.
redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen(fb_max, fb_budget, rid, label, ARGV[2], ARGV[3]), '*',
  'rid', rid, 't', t, 'variant', ARGV[1], 'role', 'shadow', 'label', label, 'pred', ARGV[2], 'scores', ARGV[3])
return 'scored'
