-- Applies changes to a team's roster: each given member's state is set, and a member new to the
-- roster that is not finished gets its inbox stream with its consumer group. Members not given
-- are left as they are (`sync_roster` sets the whole roster). Disbanded is terminal: a late
-- reconcile must not revive a team that is being torn down.
--
-- KEYS: meta, roster.  ARGV: inbox key prefix, group, then member name and state pairs.
if redis.call('HGET', KEYS[1], 'state') == 'disbanded' then
  return 'team_disbanded'
end
local prefix, group = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  local known = redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 0
  if known then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  elseif ARGV[i + 1] ~= 'finished' then
    local created = redis.pcall('XGROUP', 'CREATE', prefix .. ARGV[i], group, '0', 'MKSTREAM')
    if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
      return redis.error_reply(created.err)
    end
  end
end
redis.call('HSET', KEYS[1], 'state', 'active')
return 'ok'
