-- Acknowledges inbox entries of a member; acking twice is harmless (XACK counts only the first).
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, stream ids...
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'team_not_found', 0 }
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return { 'member_not_in_team', 0 }
end
return { 'ok', redis.call('XACK', KEYS[3], ARGV[1], unpack(ARGV, 3)) }
