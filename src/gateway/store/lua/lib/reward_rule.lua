-- The reward rule: one reward applied exactly once (reward.lua applies it to each item of its
-- batch, in order). Claiming the request id and updating the posterior happen in one script, so
-- a retried or concurrent reward can never count twice. A label rides along into the feedback
-- stream, which the retrainer joins with the decision log, and into the variant's confusion
-- counts (online KPIs).
-- K: the experiment's keys {arms, feedback, meta, pending, kpis, paired (shadow-vs-served
-- counts), segments (contextual routing: the request's 'seg'), shadow_rewards
-- (lib/scoring.lua's score_shadow_reward), linear (linear_thompson: the request's 'lx',
-- lib/linear.lua)}.
-- C: the call's settings, already checked by reward.lua: now (as sent) and now_n, maxlen and
-- budget (the feedback stream's, as in record.lua), default ('' for none), quota (rewards per
-- unit in the window, '' for none), quota_prefix, window, unit_prefix and unit_ttl (the per-unit
-- aggregates: an accepted reward, and its label when that is 0/1 (lib/labels.lua; or a list of
-- them), add to the unit's counters; nil: the policy keeps none).
-- The item, already checked: its request record's key, variant, reward (a number as text), label
-- JSON ('' for none), from_label ('1' when the reward was made from the label and the policy
-- lets shadows earn rewards: the shadows that answered the request then earn theirs by the same
-- rule), nonce (the record's, from the token: '' for a token without one; a record with another
-- nonce is another prediction under the same request id: 'mismatch').
-- Returns {outcome, the prediction's traceparent} (the reward's span links to it); outcome is
-- accepted (on-time feedback for a request already given the default takes the default's place)
-- | duplicate | late (kept, not learned) | quota | unknown | mismatch | invalid (the
-- variant's sums would overflow: nothing written). Every check comes before the item's first
-- write: Redis does not undo a script's writes on error.
-- Amounts must stay within +-1e300 (sums are kept in long doubles by Redis: anything near the
-- double range would read back as inf).
local function reward_num(s) local x = tonumber(s) if x ~= nil and x == x and x >= -1e300 and x <= 1e300 then return x end end

local function reward_apply(K, C, req, variant, reward, label, from_label_arg, nonce)
  local served = redis.call('HGET', req, 'variant')
  if not served then
    return {'unknown', ''}
  end
  -- The token's nonce names its prediction: another that reused the request id (both spooled,
  -- where reuse cannot be seen) is not this record's, and must not take its reward.
  if served ~= variant or (nonce ~= nil and nonce ~= '' and redis.call('HGET', req, 'nonce') ~= nonce) then
    return {'mismatch', ''}
  end
  local rid = string.match(req, ':req:(.*)$')

  -- The sums after adding the reward (or the default) must stay finite.
  local sums = redis.call('HMGET', K.arms, served .. ':s', served .. ':ss')
  local s0, ss0 = tonumber(sums[1] or '0'), tonumber(sums[2] or '0')
  for _, value in ipairs({reward, C.default}) do
    local r = tonumber(value)
    if r and not (reward_num(s0 + r) and reward_num(ss0 + r * r)) then
      return {'invalid', ''}
    end
  end
  -- linear_thompson: the request's context vector; its counters must stay finite too.
  local lx = linear_vector(redis.call('HGET', req, 'lx'))
  if lx then
    for _, value in ipairs({reward, C.default}) do
      local r = tonumber(value)
      if r and not linear_fits(K.linear, {{served, linear_increments(lx, r)}}) then
        return {'invalid', ''}
      end
    end
  end

  -- Increments go in as Lua formats them (not as sent: Redis parses numbers more strictly).
  -- The feedback stream's length for an entry of this size (see record.lua's byte budget).
  local function feedback_maxlen(...)
    local bytes = 0
    for _, v in ipairs({...}) do bytes = bytes + #v end
    return string.format('%d', math.max(1, math.min(C.maxlen, math.floor(C.budget / math.max(bytes, 1)))))
  end

  -- A request routed by its segment also counts in that segment's posterior of the variant.
  local segment = redis.call('HGET', req, 'seg')
  -- variance_reduction: the request's covariate ('cx'), summed with the reward for the adjusted test.
  local covariate = reward_num(redis.call('HGET', req, 'cx') or '')
  if covariate and math.abs(covariate) > 1e100 then covariate = nil end  -- its square must stay finite
  local function add_reward(value)
    local r = tonumber(value)
    redis.call('HINCRBY', K.arms, served .. ':n', 1)
    redis.call('HINCRBYFLOAT', K.arms, served .. ':s', string.format('%.17g', r))
    redis.call('HINCRBYFLOAT', K.arms, served .. ':ss', string.format('%.17g', r * r))
    if covariate then
      redis.call('HINCRBYFLOAT', K.arms, served .. ':x', string.format('%.17g', covariate))
      redis.call('HINCRBYFLOAT', K.arms, served .. ':xx', string.format('%.17g', covariate * covariate))
      redis.call('HINCRBYFLOAT', K.arms, served .. ':xy', string.format('%.17g', covariate * r))
    end
    if segment then
      local cell = segment .. '|' .. served
      redis.call('HINCRBY', K.segments, cell .. ':n', 1)
      redis.call('HINCRBYFLOAT', K.segments, cell .. ':s', string.format('%.17g', r))
      redis.call('HINCRBYFLOAT', K.segments, cell .. ':ss', string.format('%.17g', r * r))
    end
    if lx then
      linear_add(K.linear, served, linear_increments(lx, r))
    end
  end
  -- The default `old` counted in place of reward `value`: the sums change, the counts stay.
  local function replace_default(old, value)
    local r = tonumber(value)
    redis.call('HINCRBYFLOAT', K.arms, served .. ':s', string.format('%.17g', r - old))
    redis.call('HINCRBYFLOAT', K.arms, served .. ':ss', string.format('%.17g', r * r - old * old))
    if covariate then
      redis.call('HINCRBYFLOAT', K.arms, served .. ':xy', string.format('%.17g', covariate * (r - old)))
    end
    if segment then
      local cell = segment .. '|' .. served
      redis.call('HINCRBYFLOAT', K.segments, cell .. ':s', string.format('%.17g', r - old))
      redis.call('HINCRBYFLOAT', K.segments, cell .. ':ss', string.format('%.17g', r * r - old * old))
    end
    if lx then
      linear_add(K.linear, served, linear_replaced(lx, old, r))
    end
  end

  -- Past its deadline a request takes the default reward (as the sweeper would), so the outcome
  -- does not depend on when the sweeper last ran. The deadline is the record's own ('dl'): a record
  -- replayed from a spool is swept later, but its feedback is on time only until the deadline.
  local deadline = redis.call('HGET', req, 'dl') or redis.call('ZSCORE', K.pending, rid)
  if deadline and C.default ~= '' and C.now_n > tonumber(deadline) then
    if redis.call('HSETNX', req, 'reward', C.default) == 1 then
      redis.call('HSET', req, 'rewarded_at', C.now, 'defaulted', '1')
      add_reward(C.default)
    end
    redis.call('ZREM', K.pending, rid)
  end

  -- Feedback on time for a request the sweeper already gave the default (the feedback waited in a
  -- router's spool while Redis was away, or another replica swept first): it takes the default's
  -- place, as if it had arrived first. Only once: the record is then rewarded, not defaulted.
  -- Not once late feedback was kept: training and evaluation have read that one already (the
  -- on-time copy, still spooled when a client sent it again after the deadline, is a duplicate).
  local replaced = nil
  if redis.call('HGET', req, 'defaulted') == '1' and deadline and C.now_n <= tonumber(deadline)
      and redis.call('HEXISTS', req, 'late') == 0 then
    replaced = tonumber(redis.call('HGET', req, 'reward'))
    -- The sums after trading the default for the reward must stay finite (nothing written yet).
    local r = tonumber(reward)
    if not (replaced and reward_num(s0 + r - replaced) and reward_num(ss0 + r * r - replaced * replaced))
        or (lx and not linear_fits(K.linear, {{served, linear_replaced(lx, replaced, r)}})) then
      return {'invalid', ''}
    end
  end
  if redis.call('HEXISTS', req, 'reward') == 1 and not replaced then
    if redis.call('HGET', req, 'defaulted') == '1' and redis.call('HSETNX', req, 'late', reward) == 1 then
      -- Late feedback is kept for retraining, but the bandit already counted the default.
      if label ~= '' then
        redis.call('HSET', req, 'label', label)
        redis.call('HINCRBY', K.meta, 'labels_since_retrain', 1)
      end
      local pred = redis.call('HGET', req, 'pred') or ''
      redis.call('XADD', K.feedback, 'MAXLEN', '~', feedback_maxlen(rid, reward, label, pred), '*', 'rid', rid, 't', C.now,
        'variant', served, 'reward', reward, 'label', label, 'pred', pred, 'late', '1')
      return {'late', ''}
    end
    return {'duplicate', ''}
  end

  local unit = redis.call('HGET', req, 'unit')
  -- The unit's aggregate counters: the reward's sum must stay finite there too (checked here,
  -- before the first write); labels count only when 0/1 (or a list of 0/1), so their sum cannot.
  local unit_key, unit_labels, unit_label_sum = nil, 0, 0
  if C.unit_ttl and unit and unit ~= '' then
    unit_key = C.unit_prefix .. unit
    if not reward_num((tonumber(redis.call('HGET', unit_key, 'rs') or '0') or 0) + tonumber(reward)) then
      return {'invalid', ''}
    end
    local ok, decoded = pcall(cjson.decode, label)
    local values = ok and (type(decoded) == 'table' and decoded or {decoded}) or {}
    -- A list counts only when every value is 0 or 1, as training takes it (or skips it whole).
    for _, v in ipairs(values) do
      local b = binary_label(v)  -- lib/labels.lua: the rule training learns by
      if b == nil then
        unit_labels, unit_label_sum = 0, 0
        break
      end
      unit_labels, unit_label_sum = unit_labels + 1, unit_label_sum + b
    end
  end
  local quota_key = nil
  if C.quota ~= '' and unit and unit ~= '' then
    -- Same hash tag as the other keys of the experiment, so the same slot on a cluster.
    quota_key = C.quota_prefix .. unit
    local used = tonumber(redis.call('GET', quota_key) or '0')
    if used >= tonumber(C.quota) then
      return {'quota', ''}
    end
  end

  redis.call('HSET', req, 'reward', reward, 'rewarded_at', C.now)
  redis.call('ZREM', K.pending, rid)
  if replaced then
    redis.call('HDEL', req, 'defaulted')
    replace_default(replaced, reward)
  else
    add_reward(reward)
  end
  if quota_key then
    if redis.call('INCR', quota_key) == 1 then
      redis.call('EXPIRE', quota_key, string.format('%d', C.window))
    end
  end
  if unit_key then
    redis.call('HINCRBY', unit_key, 'rn', 1)
    redis.call('HINCRBYFLOAT', unit_key, 'rs', string.format('%.17g', tonumber(reward)))
    if unit_labels > 0 then
      redis.call('HINCRBY', unit_key, 'ln', string.format('%d', unit_labels))
      redis.call('HINCRBY', unit_key, 'ls', string.format('%d', unit_label_sum))
    end
    redis.call('EXPIRE', unit_key, string.format('%d', C.unit_ttl))
  end
  local pred = redis.call('HGET', req, 'pred') or ''
  -- Shadow answers already on the record: {variant, prediction JSON}, and their fields as stored.
  local shadow_answers, shadow_fields = {}, {}
  local record = redis.call('HGETALL', req)
  for i = 1, #record, 2 do
    local name = record[i]
    if string.sub(name, 1, 3) == 'sh:' then
      table.insert(shadow_answers, {string.sub(name, 4), record[i + 1]})
      table.insert(shadow_fields, {name, record[i + 1]})
    elseif string.sub(name, 1, 4) == 'shs:' then
      table.insert(shadow_fields, {name, record[i + 1]})
    end
  end
  if label ~= '' then
    redis.call('HSET', req, 'label', label)
    redis.call('HINCRBY', K.meta, 'labels_since_retrain', 1)
    local from_label = from_label_arg == '1'
    if from_label then
      -- A shadow answer that arrives after this label earns its reward by the same rule.
      redis.call('HSET', req, 'lr', '1')
    end
    -- Confusion counts for the variant's lifetime KPIs (lib/scoring.lua), and the same for every
    -- shadow variant that answered this request, paired with the served one.
    local rows = score_rows(label, pred)
    local served_correct = rows and score_count(K.kpis, served, rows)
    for _, kv in ipairs(shadow_answers) do
      local shadow_rows = score_rows(label, kv[2])
      local shadow_correct = shadow_rows and score_count(K.kpis, kv[1], shadow_rows)
      if shadow_correct and served_correct then
        score_pair(K.paired, kv[1], served, shadow_correct, served_correct)
      end
      if shadow_correct and from_label then
        score_shadow_reward(K.shadow_rewards, K.arms, K.meta, kv[1], shadow_correct)
      end
    end
  end
  local scores = redis.call('HGET', req, 'scores') or ''
  -- The shadows' answers ride along ('sh:<variant>' and 'shs:<variant>' as on the record), so the
  -- monitor scores their windows from the same entries.
  local entry = {'rid', rid, 't', C.now, 'variant', served, 'reward', reward, 'label', label, 'pred', pred, 'scores', scores}
  local sizes = {rid, reward, label, pred, scores}
  for _, kv in ipairs(shadow_fields) do
    table.insert(entry, kv[1]); table.insert(entry, kv[2]); table.insert(sizes, kv[2])
  end
  redis.call('XADD', K.feedback, 'MAXLEN', '~', feedback_maxlen(unpack(sizes)), '*', unpack(entry))
  return {'accepted', redis.call('HGET', req, 'tp') or ''}
end
