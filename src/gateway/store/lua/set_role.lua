-- Move a variant in or out of shadow, once, and record why: two replicas (or an operator and
-- the shadow-first rule) that decide at the same time change it once.
-- KEYS[1] meta hash, KEYS[2] history list, KEYS[3] the shadows' own rewards hash, KEYS[4] arms hash
-- ARGV[1] variant, ARGV[2] new role (live | shadow), ARGV[3] the role it must have now,
-- ARGV[4] its role by the policy (when no run-time role is set), ARGV[5] history entry JSON,
-- ARGV[6] now, ARGV[7] history cap, ARGV[8] '1': going live reopens exploration as a new
-- challenger does (a promoted champion keeps its title until a new promotion), ARGV[9] '1': going
-- live, the rewards the variant earned in shadow (on live requests, from their labels) join its
-- posterior; either way they are then cleared, so that none counts twice
-- Returns 1 when changed, 0 when the variant's role was not ARGV[3].
local function int_arg(s, lo, hi) if type(s) ~= 'string' or #s > 15 or not string.match(s, '^%d+$') then return nil end local x = tonumber(s) if x < lo or x > hi then return nil end return x end
local keep = int_arg(ARGV[7], 1, 2^31)
local roles_ok = {live = true, shadow = true}
if not keep or not roles_ok[ARGV[2]] or not roles_ok[ARGV[3]] or not roles_ok[ARGV[4]] or not tonumber(ARGV[6])
    or not (ARGV[9] == '0' or ARGV[9] == '1') then
  return redis.error_reply('ERR set_role: bad arguments')
end
local raw = redis.call('HGET', KEYS[1], 'roles')
local roles = raw and cjson.decode(raw) or {}
if (roles[ARGV[1]] or ARGV[4]) ~= ARGV[3] then
  return 0
end
roles[ARGV[1]] = ARGV[2]
redis.call('HSET', KEYS[1], 'roles', cjson.encode(roles))
if ARGV[2] == 'live' and ARGV[8] == '1' then
  if (redis.call('HGET', KEYS[1], 'status') or 'exploring') == 'promoted' then
    redis.call('HSET', KEYS[1], 'status', 'exploring', 'changed_at', ARGV[6])
  end
  redis.call('HSET', KEYS[1], 'challenger_at', ARGV[6])
end
if ARGV[2] == 'live' then
  local earned = redis.call('HMGET', KEYS[3], ARGV[1] .. ':n', ARGV[1] .. ':s', ARGV[1] .. ':ss')
  if ARGV[9] == '1' and earned[1] then
    redis.call('HINCRBY', KEYS[4], ARGV[1] .. ':n', earned[1])
    redis.call('HINCRBYFLOAT', KEYS[4], ARGV[1] .. ':s', earned[2] or '0')
    redis.call('HINCRBYFLOAT', KEYS[4], ARGV[1] .. ':ss', earned[3] or '0')
  end
  redis.call('HDEL', KEYS[3], ARGV[1] .. ':n', ARGV[1] .. ':s', ARGV[1] .. ':ss')
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], string.format('%d', -keep), -1)
return 1
