-- Sets a team's roster in one step, marks the team active and makes sure every member has an
-- inbox stream with its consumer group. A member missing from the given roster is marked
-- finished, never removed: its inbox may hold unread messages, and a roster built from a cache
-- that lags (or, after a restart, has not listed everything yet) must not destroy them. Only
-- teardown removes inboxes, and it finds every one of them in the roster.
-- Disbanded is terminal: a late reconcile must not revive a team that is being torn down.
--
-- KEYS: meta, roster.  ARGV: inbox key prefix, group, then member name and state pairs.
if redis.call('HGET', KEYS[1], 'state') == 'disbanded' then
  return 'team_disbanded'
end
local prefix, group = ARGV[1], ARGV[2]
local wanted = {}
for i = 3, #ARGV, 2 do
  wanted[ARGV[i]] = true
end
for _, old in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not wanted[old] then
    redis.call('HSET', KEYS[2], old, 'finished')
  end
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  local created = redis.pcall('XGROUP', 'CREATE', prefix .. ARGV[i], group, '0', 'MKSTREAM')
  if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(created.err)
  end
end
redis.call('HSET', KEYS[1], 'state', 'active')
return 'ok'
