-- What a 0/1 label is, the one rule on the Lua side (gateway/learning/labels.py is the same rule
-- in Python, which training learns by; a test holds the two together): a decoded JSON value is
-- 0 or 1 when it is false/true, a number equal to 0 or 1, or exactly the string "0" or "1".
local function binary_label(v)
  if v == true or v == 1 or v == '1' then return 1 end
  if v == false or v == 0 or v == '0' then return 0 end
  return nil
end
