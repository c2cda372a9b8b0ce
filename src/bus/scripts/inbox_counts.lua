-- Counts a member's pending (delivered, not acked) and undelivered inbox entries.
-- Undelivered is the group's lag; when Redis cannot tell the lag (entries deleted out of order)
-- the entries after the last delivered id are counted in small pages.
--
-- KEYS: meta, roster, inbox.  ARGV: group, member.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'team_not_found', 0, 0 }
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return { 'member_not_in_team', 0, 0 }
end
local pending = redis.call('XPENDING', KEYS[3], ARGV[1])[1]
local last, lag = '0-0', false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[3])) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  if fields['name'] == ARGV[1] then
    last, lag = fields['last-delivered-id'], fields['lag']
  end
end
if type(lag) ~= 'number' then
  lag = 0
  local from = '(' .. last
  while true do
    local page = redis.call('XRANGE', KEYS[3], from, '+', 'COUNT', 100)
    lag = lag + #page
    if #page < 100 then
      break
    end
    from = '(' .. page[#page][1]
  end
end
return { 'ok', pending, lag }
