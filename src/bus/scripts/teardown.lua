-- Removes every key of a team with one UNLINK. The roster names every inbox, so the key set is
-- complete; doing it in a script means a concurrent roster sync cannot slip an inbox in between.
--
-- KEYS: meta, roster, sent, sent-at.  ARGV: inbox key prefix.
local keys = { KEYS[1], KEYS[2], KEYS[3], KEYS[4] }
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  table.insert(keys, ARGV[1] .. name)
end
return redis.call('UNLINK', unpack(keys))
