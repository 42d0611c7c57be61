-- Scoring a labelled prediction, shared by reward.lua (the served variant and its shadows) and
-- shadow.lua (a shadow answer that arrives after the label): prepended to both when loaded, so
-- a shadow variant is scored by exactly the rule that scores the served one.
-- Class 1 is the positive class, and labels and predictions compare, by the one rule of
-- lib/labels.lua (loaded before this file).
local function score_positive(v) return label_key(v) == '1' end
local score_same = label_same

-- {labels, preds} decoded from JSON when they line up row for row, else nil.
local function score_rows(label_json, pred_json)
  local ok_l, labels = pcall(cjson.decode, label_json)
  local ok_p, preds = pcall(cjson.decode, pred_json)
  if not (ok_l and ok_p and type(preds) == 'table') then return nil end
  if type(labels) ~= 'table' then labels = {labels} end
  if #labels ~= #preds then return nil end
  return {labels, preds}
end

-- Add the rows to the variant's confusion counts (lifetime KPIs); returns each row's correctness.
local function score_count(kpi_key, variant, rows)
  local labels, preds, correct = rows[1], rows[2], {}
  for i = 1, #labels do
    local p, l = score_positive(preds[i]), score_positive(labels[i])
    local cell = (p and l and 'tp') or (p and 'fp') or (l and 'fn') or 'tn'
    redis.call('HINCRBY', kpi_key, variant .. ':' .. cell, 1)
    correct[i] = score_same(labels[i], preds[i])
    if correct[i] then redis.call('HINCRBY', kpi_key, variant .. ':correct', 1) end
  end
  return correct
end

local function score_correct(rows)
  local labels, preds, correct = rows[1], rows[2], {}
  for i = 1, #labels do correct[i] = score_same(labels[i], preds[i]) end
  return correct
end

-- Paired outcomes of a shadow variant and the served one on the same rows, for shadow-first's
-- exact McNemar test: '<shadow>|<served>:sw' rows only the shadow got right, ':lw' rows only the
-- served one got right, ':n' rows compared.
local function score_pair(pair_key, shadow, served, shadow_correct, served_correct)
  local field = shadow .. '|' .. served .. ':'
  for i = 1, #shadow_correct do
    if shadow_correct[i] and not served_correct[i] then
      redis.call('HINCRBY', pair_key, field .. 'sw', 1)
    elseif served_correct[i] and not shadow_correct[i] then
      redis.call('HINCRBY', pair_key, field .. 'lw', 1)
    end
  end
  redis.call('HINCRBY', pair_key, field .. 'n', #shadow_correct)
end

-- What a shadow variant would have earned on a request whose reward came from its label ('match':
-- the share of rows right), kept per shadow ('<shadow>:n', ':s', ':ss'): when it goes live, these
-- are rewards of its own on live requests, and its posterior starts from them (set_role.lua). A
-- label that comes after it went live adds to its arm's counters at once.
local function score_shadow_reward(reward_key, arms_key, meta_key, shadow, correct)
  local right = 0
  for i = 1, #correct do if correct[i] then right = right + 1 end end
  local r = right / #correct
  -- Read defensively: this runs after the script's first writes, so it must not raise.
  local ok, roles = pcall(cjson.decode, redis.call('HGET', meta_key, 'roles') or '{}')
  local live = ok and type(roles) == 'table' and roles[shadow] == 'live'
  local key = live and arms_key or reward_key
  redis.call('HINCRBY', key, shadow .. ':n', 1)
  redis.call('HINCRBYFLOAT', key, shadow .. ':s', string.format('%.17g', r))
  redis.call('HINCRBYFLOAT', key, shadow .. ':ss', string.format('%.17g', r * r))
end
