-- Acknowledges inbox entries of a member and deletes them, taking their size off the inbox's
-- byte count (send.lua keeps it). Acking twice is harmless: only pending entries count.
-- Every id is checked (XPENDING) before anything is written, so an invalid id changes nothing.
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, stream ids...
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'team_not_found', 0 }
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return { 'member_not_in_team', 0 }
end
local group, member = ARGV[1], ARGV[2]
local pending = {}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[3], group, ARGV[i], ARGV[i], 1) > 0 then
    table.insert(pending, ARGV[i])
  end
end
local acked, freed = 0, 0
for _, sid in ipairs(pending) do
  acked = acked + redis.call('XACK', KEYS[3], group, sid)
  local entry = redis.call('XRANGE', KEYS[3], sid, sid)[1]
  if entry then
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'size' then
        freed = freed + (tonumber(fields[j + 1]) or 0)
      end
    end
    redis.call('XDEL', KEYS[3], sid)
  end
end
if freed > 0 and redis.call('HINCRBY', KEYS[1], 'bytes:' .. member, -freed) < 0 then
  redis.call('HSET', KEYS[1], 'bytes:' .. member, 0)
end
return { 'ok', acked }
