-- Checks the team and its roster and appends the message to the recipients' inboxes, all in one
-- atomic step: a disband or a roster change cannot land between the check and the XADD.
-- Idempotent: the reply of the first send of (sender, id) is kept and returned to a retry.
--
-- KEYS: meta, roster, sent, sent-at.
-- ARGV: inbox key prefix, from, to ('' for broadcast), kind, body, id, maxlen,
--       idempotency ttl in ms, '1' for an operator notice, '2' for a person ('user:…', not on
--       the roster), '0' for a member.
-- Reply: {'ok' | 'dup', json [[to, stream id], ...]} or {error code, detail}.
local prefix, from, to, kind, body, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local maxlen, ttl, notice, person = ARGV[7], tonumber(ARGV[8]), ARGV[9] == '1', ARGV[9] == '2'

local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return { 'team_not_found', '' }
end
if state ~= 'active' and not notice then
  return { 'team_disbanded', '' }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - ttl, 'LIMIT', 0, 100)
if #expired > 0 then
  redis.call('HDEL', KEYS[3], unpack(expired))
  redis.call('ZREM', KEYS[4], unpack(expired))
end
local marker = from .. '\n' .. id
local prior = redis.call('HGET', KEYS[3], marker)
if prior then
  return { 'dup', prior }
end

if not notice and not person and not redis.call('HGET', KEYS[2], from) then
  return { 'sender_not_in_team', from }
end

local targets = {}
if to == '' then
  local roster = redis.call('HGETALL', KEYS[2])
  for i = 1, #roster, 2 do
    if roster[i] ~= from and roster[i + 1] ~= 'finished' then
      table.insert(targets, roster[i])
    end
  end
  table.sort(targets)
else
  local member = redis.call('HGET', KEYS[2], to)
  if not member then
    return { 'unknown_recipient', to }
  end
  if member == 'finished' then
    return { 'recipient_finished', to }
  end
  targets = { to }
end

local delivered = {}
for _, name in ipairs(targets) do
  local sid = redis.call('XADD', prefix .. name, 'MAXLEN', '~', maxlen, '*',
    'id', id, 'from', from, 'to', name, 'kind', kind, 'body', body, 'ts', tostring(now))
  table.insert(delivered, { name, sid })
end
-- cjson encodes an empty table as an object; a broadcast to nobody is an empty list.
local encoded = '[]'
if #delivered > 0 then
  encoded = cjson.encode(delivered)
end
redis.call('HSET', KEYS[3], marker, encoded)
redis.call('ZADD', KEYS[4], now, marker)
return { 'ok', encoded }
