-- Removes every key of a team with one UNLINK. The roster names every inbox, so the key set is
-- complete; doing it in a script means a concurrent roster sync cannot slip an inbox in between.
--
-- Each inbox removed is announced on the wake channel, so its parked waits read again and learn
-- that the team is gone.
--
-- KEYS: meta, roster, sent, sent-at.  ARGV: inbox key prefix, wake channel.
local keys = { KEYS[1], KEYS[2], KEYS[3], KEYS[4] }
local inboxes = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  table.insert(keys, ARGV[1] .. name)
  table.insert(inboxes, ARGV[1] .. name)
end
local removed = redis.call('UNLINK', unpack(keys))
for _, inbox in ipairs(inboxes) do
  redis.call('PUBLISH', ARGV[2], inbox)
end
return removed
