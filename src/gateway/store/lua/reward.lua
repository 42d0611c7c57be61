-- Apply one reward exactly once. Claiming the request id and updating the posterior happen in
-- one script, so a retried or concurrent reward can never count twice. A label rides along into
-- the feedback stream, which the retrainer joins with the decision log, and into the variant's
-- confusion counts (online KPIs).
-- KEYS[1] request record, KEYS[2] arms hash, KEYS[3] feedback stream, KEYS[4] meta hash,
-- KEYS[5] pending zset, KEYS[6] KPI counters hash, KEYS[7] shadow-vs-served paired counts hash,
-- KEYS[8] per-segment counters hash (contextual routing: the request's 'seg'),
-- KEYS[9] the shadows' own rewards hash (lib/scoring.lua's score_shadow_reward),
-- KEYS[10] the linear model counters hash (linear_thompson: the request's 'lx', lib/linear.lua)
-- ARGV[1] variant, ARGV[2] reward, ARGV[3] now (unix seconds), ARGV[4] label JSON ('' for none),
-- ARGV[5] feedback stream max length, ARGV[6] default reward ('' for none),
-- ARGV[7] rewards allowed per unit in the window ('' for no quota), ARGV[8] quota key prefix,
-- ARGV[9] quota window seconds, ARGV[10] the feedback stream's byte budget (as in record.lua),
-- ARGV[11] '1' when the reward was made from the label ('match') and the policy lets shadows
-- earn rewards: the shadows that answered the request then earn theirs by the same rule ('0' or
-- '' otherwise),
-- ARGV[12] the per-unit aggregates' key prefix ('' or absent: the policy keeps none): an accepted
-- reward, and its label when that is 0/1 (lib/labels.lua; or a list of them), add to the unit's counters (record.lua counts its requests),
-- ARGV[13] seconds those counters live after this update
-- Returns {outcome, the prediction's traceparent} (the reward's span links to it); outcome is
-- accepted | duplicate | late (kept, not learned) | quota | unknown | mismatch | invalid (a value
-- that is not a finite number, or that would make the variant's sums overflow: nothing written).
-- Every check comes before the first write: Redis does not undo a script's writes on error.
-- Counts must be digits and amounts within +-1e300 (sums are kept in long doubles by Redis:
-- anything near the double range would read back as inf).
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local function num(s) local x = tonumber(s) if x ~= nil and x == x and x >= -1e300 and x <= 1e300 then return x end end
local maxlen, quota, window, budget = int_arg(ARGV[5], 0, 2^31), ARGV[7] == '' or int_arg(ARGV[7], 0, 2^50),
  int_arg(ARGV[9], 1, 2^31), int_arg(ARGV[10], 0, 2^50)
if not num(ARGV[2]) or not num(ARGV[3]) or not maxlen or not quota or not window or not budget
    or (ARGV[6] ~= '' and not num(ARGV[6])) or type(ARGV[4]) ~= 'string' or type(ARGV[8]) ~= 'string'
    or not (ARGV[11] == nil or ARGV[11] == '' or ARGV[11] == '0' or ARGV[11] == '1') then
  return {'invalid', ''}
end
local unit_ttl = nil
if ARGV[12] ~= nil and ARGV[12] ~= '' then
  unit_ttl = int_arg(ARGV[13], 1, 2^31)
  if not unit_ttl then
    return {'invalid', ''}
  end
end
local served = redis.call('HGET', KEYS[1], 'variant')
if not served then
  return {'unknown', ''}
end
if served ~= ARGV[1] then
  return {'mismatch', ''}
end
local rid = string.match(KEYS[1], ':req:(.*)$')
local now = tonumber(ARGV[3])

-- The sums after adding the reward (or the default) must stay finite.
local sums = redis.call('HMGET', KEYS[2], served .. ':s', served .. ':ss')
local s0, ss0 = tonumber(sums[1] or '0'), tonumber(sums[2] or '0')
for _, value in ipairs({ARGV[2], ARGV[6]}) do
  local r = tonumber(value)
  if r and not (num(s0 + r) and num(ss0 + r * r)) then
    return {'invalid', ''}
  end
end
-- linear_thompson: the request's context vector; its counters must stay finite too.
local lx = KEYS[10] and linear_vector(redis.call('HGET', KEYS[1], 'lx'))
if lx then
  for _, value in ipairs({ARGV[2], ARGV[6]}) do
    local r = tonumber(value)
    if r and not linear_fits(KEYS[10], {{served, linear_increments(lx, r)}}) then
      return {'invalid', ''}
    end
  end
end

-- Increments go in as Lua formats them (not as sent: Redis parses numbers more strictly).
-- The feedback stream's length for an entry of this size (see record.lua's byte budget).
local function feedback_maxlen(...)
  local bytes = 0
  for _, v in ipairs({...}) do bytes = bytes + #v end
  return string.format('%d', math.max(1, math.min(maxlen, math.floor(budget / math.max(bytes, 1)))))
end

-- A request routed by its segment also counts in that segment's posterior of the variant.
local segment = redis.call('HGET', KEYS[1], 'seg')
-- variance_reduction: the request's covariate ('cx'), summed with the reward for the adjusted test.
local covariate = num(redis.call('HGET', KEYS[1], 'cx') or '')
if covariate and math.abs(covariate) > 1e100 then covariate = nil end  -- its square must stay finite
local function add_reward(value)
  local r = tonumber(value)
  redis.call('HINCRBY', KEYS[2], served .. ':n', 1)
  redis.call('HINCRBYFLOAT', KEYS[2], served .. ':s', string.format('%.17g', r))
  redis.call('HINCRBYFLOAT', KEYS[2], served .. ':ss', string.format('%.17g', r * r))
  if covariate then
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':x', string.format('%.17g', covariate))
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':xx', string.format('%.17g', covariate * covariate))
    redis.call('HINCRBYFLOAT', KEYS[2], served .. ':xy', string.format('%.17g', covariate * r))
  end
  if segment and KEYS[8] then
    local cell = segment .. '|' .. served
    redis.call('HINCRBY', KEYS[8], cell .. ':n', 1)
    redis.call('HINCRBYFLOAT', KEYS[8], cell .. ':s', string.format('%.17g', r))
    redis.call('HINCRBYFLOAT', KEYS[8], cell .. ':ss', string.format('%.17g', r * r))
  end
  if lx then
    linear_add(KEYS[10], served, linear_increments(lx, r))
  end
end

-- Past its deadline a request takes the default reward (as the sweeper would), so the outcome
-- does not depend on when the sweeper last ran. The deadline is the record's own ('dl'): a record
-- replayed from a spool is swept later, but its feedback is on time only until the deadline.
local deadline = redis.call('HGET', KEYS[1], 'dl') or redis.call('ZSCORE', KEYS[5], rid)
if deadline and ARGV[6] ~= '' and now > tonumber(deadline) then
  if redis.call('HSETNX', KEYS[1], 'reward', ARGV[6]) == 1 then
    redis.call('HSET', KEYS[1], 'rewarded_at', ARGV[3], 'defaulted', '1')
    add_reward(ARGV[6])
  end
  redis.call('ZREM', KEYS[5], rid)
end

if redis.call('HEXISTS', KEYS[1], 'reward') == 1 then
  if redis.call('HGET', KEYS[1], 'defaulted') == '1' and redis.call('HSETNX', KEYS[1], 'late', ARGV[2]) == 1 then
    -- Late feedback is kept for retraining, but the bandit already counted the default.
    if ARGV[4] ~= '' then
      redis.call('HSET', KEYS[1], 'label', ARGV[4])
      redis.call('HINCRBY', KEYS[4], 'labels_since_retrain', 1)
    end
    local pred = redis.call('HGET', KEYS[1], 'pred') or ''
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', feedback_maxlen(rid, ARGV[2], ARGV[4], pred), '*', 'rid', rid, 't', ARGV[3],
      'variant', served, 'reward', ARGV[2], 'label', ARGV[4], 'pred', pred, 'late', '1')
    return {'late', ''}
  end
  return {'duplicate', ''}
end

local unit = redis.call('HGET', KEYS[1], 'unit')
-- The unit's aggregate counters: the reward's sum must stay finite there too (checked here,
-- before the first write); labels count only when 0/1 (or a list of 0/1), so their sum cannot.
local unit_key, unit_labels, unit_label_sum = nil, 0, 0
if unit_ttl and unit and unit ~= '' then
  unit_key = ARGV[12] .. unit
  if not num((tonumber(redis.call('HGET', unit_key, 'rs') or '0') or 0) + tonumber(ARGV[2])) then
    return {'invalid', ''}
  end
  local ok, label = pcall(cjson.decode, ARGV[4])
  local values = ok and (type(label) == 'table' and label or {label}) or {}
  for _, v in ipairs(values) do
    local b = binary_label(v)  -- lib/labels.lua: the rule training learns by
    if b then
      unit_labels, unit_label_sum = unit_labels + 1, unit_label_sum + b
    end
  end
end
local quota_key = nil
if ARGV[7] ~= '' and unit and unit ~= '' then
  -- Same hash tag as the other keys of the experiment, so the same slot on a cluster.
  quota_key = ARGV[8] .. unit
  local used = tonumber(redis.call('GET', quota_key) or '0')
  if used >= tonumber(ARGV[7]) then
    return {'quota', ''}
  end
end

redis.call('HSET', KEYS[1], 'reward', ARGV[2], 'rewarded_at', ARGV[3])
redis.call('ZREM', KEYS[5], rid)
add_reward(ARGV[2])
if quota_key then
  if redis.call('INCR', quota_key) == 1 then
    redis.call('EXPIRE', quota_key, string.format('%d', window))
  end
end
if unit_key then
  redis.call('HINCRBY', unit_key, 'rn', 1)
  redis.call('HINCRBYFLOAT', unit_key, 'rs', string.format('%.17g', tonumber(ARGV[2])))
  if unit_labels > 0 then
    redis.call('HINCRBY', unit_key, 'ln', string.format('%d', unit_labels))
    redis.call('HINCRBY', unit_key, 'ls', string.format('%d', unit_label_sum))
  end
  redis.call('EXPIRE', unit_key, string.format('%d', unit_ttl))
end
local pred = redis.call('HGET', KEYS[1], 'pred') or ''
-- Shadow answers already on the record: {variant, prediction JSON}, and their fields as stored.
local shadow_answers, shadow_fields = {}, {}
local record = redis.call('HGETALL', KEYS[1])
for i = 1, #record, 2 do
  local name = record[i]
  if string.sub(name, 1, 3) == 'sh:' then
    table.insert(shadow_answers, {string.sub(name, 4), record[i + 1]})
    table.insert(shadow_fields, {name, record[i + 1]})
  elseif string.sub(name, 1, 4) == 'shs:' then
    table.insert(shadow_fields, {name, record[i + 1]})
  end
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'label', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'labels_since_retrain', 1)
  local from_label = ARGV[11] == '1' and KEYS[9]
  if from_label then
    -- A shadow answer that arrives after this label earns its reward by the same rule.
    redis.call('HSET', KEYS[1], 'lr', '1')
  end
  -- Confusion counts for the variant's lifetime KPIs (lib/scoring.lua), and the same for every
  -- shadow variant that answered this request, paired with the served one.
  local rows = score_rows(ARGV[4], pred)
  local served_correct = rows and score_count(KEYS[6], served, rows)
  for _, kv in ipairs(shadow_answers) do
    local shadow_rows = score_rows(ARGV[4], kv[2])
    local shadow_correct = shadow_rows and score_count(KEYS[6], kv[1], shadow_rows)
    if shadow_correct and served_correct then
      score_pair(KEYS[7], kv[1], served, shadow_correct, served_correct)
    end
    if shadow_correct and from_label then
      score_shadow_reward(KEYS[9], KEYS[2], KEYS[4], kv[1], shadow_correct)
    end
  end
end
local scores = redis.call('HGET', KEYS[1], 'scores') or ''
-- The shadows' answers ride along ('sh:<variant>' and 'shs:<variant>' as on the record), so the
-- monitor scores their windows from the same entries.
local entry = {'rid', rid, 't', ARGV[3], 'variant', served, 'reward', ARGV[2], 'label', ARGV[4], 'pred', pred, 'scores', scores}
local sizes = {rid, ARGV[2], ARGV[4], pred, scores}
for _, kv in ipairs(shadow_fields) do
  table.insert(entry, kv[1]); table.insert(entry, kv[2]); table.insert(sizes, kv[2])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', feedback_maxlen(unpack(sizes)), '*', unpack(entry))
return {'accepted', redis.call('HGET', KEYS[1], 'tp') or ''}
