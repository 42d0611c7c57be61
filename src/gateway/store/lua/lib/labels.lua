-- What a label is, the one rule on the Lua side (gateway/learning/labels.py is the same rule in
-- Python, which training and the window KPIs use; tests/integration/test_label_rule.py holds the
-- two together). label_key: the text a decoded JSON label or prediction compares by: a number by
-- value as '%.17g' (1, 1.0 and 1e0 are '1'; -0 is '0'), true/false '1'/'0', a string itself,
-- anything else none (it matches nothing).
local function label_key(v)
  local t = type(v)
  if t == 'boolean' then return v and '1' or '0' end
  if t == 'number' then
    if v ~= v then return nil end  -- NaN equals nothing
    if v == 0 then return '0' end
    return string.format('%.17g', v)
  end
  if t == 'string' then return v end
  return nil
end

-- A label and a prediction agree: the reward 'match', accuracy, the paired test.
local function label_same(a, b)
  local k = label_key(a)
  return k ~= nil and k == label_key(b)
end

-- 0 or 1 (a unit's labels and mean_label aggregates count these), else nil.
local function binary_label(v)
  local k = label_key(v)
  if k == '1' then return 1 elseif k == '0' then return 0 end
  return nil
end
