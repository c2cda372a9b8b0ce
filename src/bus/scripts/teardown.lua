-- Removes every key of a team with one UNLINK. The roster names every inbox, so the key set is
-- complete; doing it in a script means a concurrent roster sync cannot slip an inbox in between.
--
-- The transcript is kept instead when a uid and a retention are given: renamed to the Team's uid
-- (so a re-created team of the same name starts clean), set to expire after the retention, and
-- listed in `transcripts` scored by the time of teardown; that index lives as long as the
-- longest-lived transcript it lists. A second teardown finds no transcript left to rename.
--
-- Each inbox removed is announced on the wake channel, so its parked waits read again and learn
-- that the team is gone (a blocked read is unblocked by Redis itself).
--
-- KEYS: meta, roster, sent, sent-at, transcript, transcripts, retained transcript.
-- ARGV: inbox key prefix, uid ('' keeps nothing), retention in ms, wake channel.
local uid, ttl, wake = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local keys = { KEYS[1], KEYS[2], KEYS[3], KEYS[4] }
local inboxes = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  table.insert(keys, ARGV[1] .. name)
  table.insert(inboxes, ARGV[1] .. name)
end
if uid ~= '' and ttl > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[7])
  redis.call('PEXPIRE', KEYS[7], ttl)
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[6], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), uid)
  if redis.call('PTTL', KEYS[6]) < ttl then
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
else
  table.insert(keys, KEYS[5])
end
local removed = redis.call('UNLINK', unpack(keys))
for _, inbox in ipairs(inboxes) do
  redis.call('PUBLISH', wake, inbox)
end
return removed
