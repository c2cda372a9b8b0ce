-- Everything a wait does before it blocks, in one round trip: checks the team and the member,
-- acknowledges what the caller hands back (ids after the batch size; acking twice is harmless),
-- then returns what the member was given but never acked (id 0) and, when there is none, what is
-- new (>), without blocking. Only the 'block' reply sends the caller to a blocking read.
-- Pending entries whose content is gone (trimmed by an older version's MAXLEN, or deleted from
-- outside) can never be delivered, so they are acked here (their count is replied for a
-- warning); left pending they would be offered on every wait.
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, batch size, stream ids to ack...
-- Reply: {outcome, trimmed count, entries, acked count}; outcome is 'ready' (entries to
-- return), 'again' (a full batch was all trimmed, more may be pending), 'block',
-- 'team_disbanded' (drained), 'team_not_found' or 'member_not_in_team'.
local group, member, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])

local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return { 'team_not_found', 0, {}, 0 }
end
if redis.call('HEXISTS', KEYS[2], member) == 0 then
  return { 'member_not_in_team', 0, {}, 0 }
end
-- Acked entries are deleted and their size taken off the inbox's byte count, as in ack.lua.
-- Every id is checked (XPENDING) first: an invalid id fails the whole script before anything
-- is acked or delivered.
local handed = {}
for i = 4, #ARGV do
  if #redis.call('XPENDING', KEYS[3], group, ARGV[i], ARGV[i], 1) > 0 then
    table.insert(handed, ARGV[i])
  end
end
local acked, freed = 0, 0
for _, sid in ipairs(handed) do
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

local pending = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', batch,
  'STREAMS', KEYS[3], '0')[1][2]
local live, trimmed = {}, {}
for _, entry in ipairs(pending) do
  if entry[2] then
    table.insert(live, entry)
  else
    table.insert(trimmed, entry[1])
  end
end
if #trimmed > 0 then
  redis.call('XACK', KEYS[3], group, unpack(trimmed))
end
if #live > 0 then
  return { 'ready', #trimmed, live, acked }
end
if #pending == batch then
  return { 'again', #trimmed, {}, acked }
end

-- A new entry cannot be trimmed: it is read from the stream itself.
local fresh = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', batch,
  'STREAMS', KEYS[3], '>')
if fresh then
  return { 'ready', #trimmed, fresh[1][2], acked }
end
if state == 'disbanded' then
  return { 'team_disbanded', #trimmed, {}, acked }
end
return { 'block', #trimmed, {}, acked }
