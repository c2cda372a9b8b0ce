-- The id of the last entry delivered to a member from its inbox (its consumer group's
-- last-delivered id), '0-0' before the first delivery or when the inbox is gone. It moves with
-- every batch a wait hands out, so it names the turn a member is between.
--
-- KEYS: inbox.  ARGV: group.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return '0-0'
end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  if fields['name'] == ARGV[1] then
    return fields['last-delivered-id']
  end
end
return '0-0'
