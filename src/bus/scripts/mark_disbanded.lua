-- Marks a team disbanded so that no new message is accepted; a missing team stays missing, so a
-- finalizer that runs again after teardown does not bring a key back.
--
-- KEYS: meta.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'disbanded')
end
return 'ok'
