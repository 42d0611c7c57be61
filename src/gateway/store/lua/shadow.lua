-- Record a batch of shadow answers to live requests of one experiment, each once and in the order
-- sent: on the request's record (so the label, when it comes, scores it as it scores the served
-- variant), and in the shadow log. If the label came first, the answer is scored now, by the same
-- rule (lib/scoring.lua). One call for many answers: a call per answer cost the router ~40% more
-- and Redis ~35% more per copy (bench/shadow_cost.py at 100% copies).
-- KEYS[1] KPI counters hash, KEYS[2] paired counts hash, KEYS[3] shadow log stream, KEYS[4] feedback
-- stream, KEYS[5] the shadows' own rewards hash, KEYS[6] meta hash, KEYS[7] arms hash,
-- KEYS[8..] each answer's request record, in the order of the answers.
-- ARGV[1] now, ARGV[2] log max length, ARGV[3] log byte budget, ARGV[4] feedback max length,
-- ARGV[5] its budget; then 3 per answer: shadow variant, prediction JSON, scores JSON ('' for none).
-- Returns one outcome per answer: gone (the record expired or never was) | duplicate | recorded |
-- scored. Any bad argument is an error and nothing is written: every argument is checked before
-- the first write.
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local SHARED_KEYS, SHARED_ARGS, ITEM_ARGS = 7, 5, 3
local n = #KEYS - SHARED_KEYS
if n < 1 or #ARGV ~= SHARED_ARGS + ITEM_ARGS * n then
  return redis.error_reply('ERR shadow: ' .. SHARED_ARGS .. ' arguments and ' .. ITEM_ARGS .. ' per request key expected')
end
local log_max, log_budget = int_arg(ARGV[2], 1, 2^31), int_arg(ARGV[3], 0, 2^50)
local fb_max, fb_budget = int_arg(ARGV[4], 1, 2^31), int_arg(ARGV[5], 0, 2^50)
if not log_max or not log_budget or not fb_max or not fb_budget or not tonumber(ARGV[1]) then
  return redis.error_reply('ERR shadow: bad arguments')
end
for i = 1, n do
  if not string.match(ARGV[SHARED_ARGS + ITEM_ARGS * (i - 1) + 1], '^[A-Za-z0-9][A-Za-z0-9_.-]*$') then
    return redis.error_reply('ERR shadow: bad arguments')
  end
end
local K = {kpis = KEYS[1], paired = KEYS[2], log = KEYS[3], feedback = KEYS[4], shadow_rewards = KEYS[5],
           meta = KEYS[6], arms = KEYS[7]}
local t = string.format('%.17g', tonumber(ARGV[1]))

local function maxlen(limit, budget, ...)
  local bytes = 0
  for _, v in ipairs({...}) do bytes = bytes + #v end
  return string.format('%d', math.max(1, math.min(limit, math.floor(budget / math.max(bytes, 1)))))
end

local function record(req, variant, pred, scores)
  local served = redis.call('HGET', req, 'variant')
  if not served then
    return 'gone'
  end
  if redis.call('HSETNX', req, 'sh:' .. variant, pred) == 0 then
    return 'duplicate'
  end
  if scores ~= '' then
    redis.call('HSET', req, 'shs:' .. variant, scores)
  end
  local rid = string.match(req, ':req:(.*)$')
  redis.call('XADD', K.log, 'MAXLEN', '~', maxlen(log_max, log_budget, rid, pred, scores), '*',
    'rid', rid, 't', t, 'variant', variant, 'served', served, 'pred', pred, 'scores', scores)

  -- Feedback already applied (on time: a defaulted request's late label is not scored for the
  -- served variant either).
  local label = redis.call('HGET', req, 'label')
  if not label or redis.call('HGET', req, 'defaulted') == '1' then
    return 'recorded'
  end
  local rows = score_rows(label, pred)
  if not rows then
    return 'recorded'
  end
  local shadow_correct = score_count(K.kpis, variant, rows)
  if redis.call('HGET', req, 'lr') == '1' then
    -- The served variant's reward came from this label: the shadow earns its own the same way.
    score_shadow_reward(K.shadow_rewards, K.arms, K.meta, variant, shadow_correct)
  end
  local served_rows = score_rows(label, redis.call('HGET', req, 'pred') or '')
  if served_rows then
    score_pair(K.paired, variant, served, shadow_correct, score_correct(served_rows))
  end
  -- The window KPIs read the feedback stream: this answer's entry, marked as a shadow's.
  redis.call('XADD', K.feedback, 'MAXLEN', '~', maxlen(fb_max, fb_budget, rid, label, pred, scores), '*',
    'rid', rid, 't', t, 'variant', variant, 'role', 'shadow', 'label', label, 'pred', pred, 'scores', scores)
  return 'scored'
end

local outcomes = {}
for i = 1, n do
  local a = SHARED_ARGS + ITEM_ARGS * (i - 1)
  outcomes[i] = record(KEYS[SHARED_KEYS + i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return outcomes
