-- Linear Thompson sampling's counters (gateway.bandit.linear_ts.increments), shared by reward.lua
-- and expire.lua so that a defaulted reward counts exactly as a sent one. A request routed by
-- numeric context carries its context vector on its record ('lx': numbers joined by ','); a
-- reward r at x adds, to its variant's fields '<variant>|<field>' of the linear hash:
-- n 1, yty r^2, xty:j r x_j and xtx:j:m x_j x_m for j <= m (0-based, as linear_ts names them).
local LINEAR_MAX_DIM = 17  -- 1 + gateway.policy_context.MAX_LINEAR_CONTEXT
local LINEAR_LIMIT = 1e300  -- as the scripts' sums: Redis adds in long doubles, read back as doubles

-- The record's vector, or nil when it has none (or not one the gateway writes: then the reward
-- counts everywhere but in the linear model).
local function linear_vector(s)
  if type(s) ~= 'string' or s == '' or #s > 1000 then return nil end
  local x = {}
  for part in string.gmatch(s .. ',', '([^,]*),') do
    local v = tonumber(part)
    if v == nil or v ~= v or math.abs(v) > 1e100 or #x >= LINEAR_MAX_DIM then return nil end
    x[#x + 1] = v
  end
  if #x == 0 then return nil end
  return x
end

-- {field, increment} pairs of one reward r at x, in linear_ts's field order.
local function linear_increments(x, r)
  local out = {{'n', 1}, {'yty', r * r}}
  for j = 1, #x do out[#out + 1] = {'xty:' .. (j - 1), r * x[j]} end
  for j = 1, #x do
    for m = j, #x do out[#out + 1] = {'xtx:' .. (j - 1) .. ':' .. (m - 1), x[j] * x[m]} end
  end
  return out
end

-- The increments that turn reward `old` at x into reward `new` (the count and xtx stay).
local function linear_replaced(x, old, new)
  local out = {{'yty', new * new - old * old}}
  for j = 1, #x do out[#out + 1] = {'xty:' .. (j - 1), (new - old) * x[j]} end
  return out
end

-- Whether adding every increment list of `all` in turn (a list of {variant, increments}) keeps
-- every counter it touches finite and within +-LINEAR_LIMIT after each step. Reads only.
local function linear_fits(key, all)
  local now = {}
  for _, item in ipairs(all) do
    for _, fv in ipairs(item[2]) do
      local field = item[1] .. '|' .. fv[1]
      if now[field] == nil then now[field] = tonumber(redis.call('HGET', key, field) or '0') or 0 end
      local v = now[field] + fv[2]
      if not (v == v and v >= -LINEAR_LIMIT and v <= LINEAR_LIMIT) then return false end
      now[field] = v
    end
  end
  return true
end

-- Add one reward's increments (check linear_fits first: this writes).
local function linear_add(key, variant, increments)
  for _, fv in ipairs(increments) do
    if fv[1] == 'n' then
      redis.call('HINCRBY', key, variant .. '|n', 1)
    else
      redis.call('HINCRBYFLOAT', key, variant .. '|' .. fv[1], string.format('%.17g', fv[2]))
    end
  end
end
