-- Acknowledges inbox entries of a member and deletes them (ack_entries.lua, prepended).
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, stream ids...
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'team_not_found', 0 }
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return { 'member_not_in_team', 0 }
end
return { 'ok', ack_entries(KEYS[1], KEYS[3], ARGV[1], ARGV[2], 3) }
