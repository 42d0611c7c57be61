-- Add a challenger: record it, reopen exploration (the champion keeps its title until a new
-- promotion), note when it came, and log the decision, in one step.
-- KEYS[1] dynamic variants hash, KEYS[2] meta hash, KEYS[3] history list
-- ARGV[1] variant name, ARGV[2] variant JSON, ARGV[3] history entry JSON, ARGV[4] now
-- ARGV[5] the history's length cap: older entries are trimmed (checked before any write).
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local keep = int_arg(ARGV[5], 1, 2^31)
if not keep then
  return redis.error_reply('ERR add_variant: bad history cap')
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
-- A challenger that starts in shadow competes for nothing yet: exploration reopens when it
-- goes live (set_role.lua).
local ok, variant = pcall(cjson.decode, ARGV[2])
if ok and type(variant) == 'table' and variant.role == 'shadow' then
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('LTRIM', KEYS[3], string.format('%d', -keep), -1)
  return 1
end
local status = redis.call('HGET', KEYS[2], 'status') or 'exploring'
if status == 'promoted' then
  redis.call('HSET', KEYS[2], 'status', 'exploring', 'changed_at', ARGV[4])
end
-- The promotion rule's min_duration_s counts from the newest challenger's arrival.
redis.call('HSET', KEYS[2], 'challenger_at', ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], string.format('%d', -keep), -1)
return 1
