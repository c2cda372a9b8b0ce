-- Everything a wait does before it blocks, in one round trip: checks the team and the member,
-- acknowledges what the caller hands back (ids after the batch size; acking twice is harmless),
-- then returns what the member was given but never acked (id 0) and, when there is none, what is
-- new (>), without blocking. Only the 'block' reply sends the caller to a blocking read, or past
-- the pooled ones parks it until a wake-up (bus/pool.rs, bus/wake.rs).
-- Pending entries whose content is gone (trimmed by an older version's MAXLEN, or deleted from
-- outside) can never be delivered, so they are acked here (their count is replied for a
-- warning); left pending they would be offered on every wait.
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, batch size, stream ids to ack...
-- Reply: {outcome, trimmed count, entries, acked count}; outcome is 'ready' (entries to
-- return), 'again' (a full batch was all trimmed, more may be pending), 'block',
-- 'team_disbanded' (drained), 'team_not_found' or 'member_not_in_team'.
local group, member, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- The state, and the byte counts the acks lower, in one read.
local meta = redis.call('HMGET', KEYS[1], 'state', 'bytes:' .. member, 'bytes')
local state = meta[1]
if not state then
  return { 'team_not_found', 0, {}, 0 }
end
if redis.call('HEXISTS', KEYS[2], member) == 0 then
  return { 'member_not_in_team', 0, {}, 0 }
end
-- What the caller hands back is acked first (ack_entries.lua, prepended).
local acked = ack_entries(KEYS[1], KEYS[3], group, member, 4, { meta[2], meta[3] })

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
