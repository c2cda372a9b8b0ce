-- Checks the team and its roster, the sender's rate and the recipients' room, and appends the
-- message to the recipients' inboxes, all in one atomic step: a disband, a roster change or
-- another sender cannot land between the checks and the XADD.
-- Idempotent for ids the caller gave (a client's message id, an operator notice's key): the reply
-- of the first send of (sender, id) is kept for the ttl and returned to a retry. A generated id is
-- new by construction, so its send neither keeps nor looks up a marker; a send that keeps one
-- first prunes the markers past the ttl (at most 100 a send), so they go as new ones come.
-- Every inbox written is announced on the wake channel (its key), which wakes parked waits.
--
-- Nothing is ever trimmed: an inbox holds at most `max entries` entries and `max bytes` bytes of
-- unacknowledged messages, a team at most `team bytes` over all its inboxes; past any of them the
-- send is refused ('inbox_full') and nothing is written. Acked entries are deleted by the ack
-- (ack.lua, wait_ready.lua), which takes their size back off the count.
-- Operator notices skip the rate limit and the byte limits and may go `reserve` entries past the
-- entry cap, so a full inbox's lead still hears of a failure or a disband.
--
-- Bookkeeping lives in the meta hash, so teardown removes it with the team:
--   bytes:<member>  bytes of the entries in that inbox (each entry's `size` field)
--   bytes           the sum of those over the team's inboxes
--   rate:<sender>   token bucket of the sender, "<tokens> <ms of last refill>"
--
-- Every send that was written is also appended once to the team's transcript (`to` = '*' for a
-- broadcast), which keeps the newest entries up to `team bytes` (oldest dropped; its size is
-- `transcript-bytes` in meta): acks delete inbox entries, so the inboxes are no record.
--
-- KEYS: meta, roster, sent, sent-at, transcript.
-- ARGV: inbox key prefix, from, to ('' for broadcast), kind, body, id, idempotency ttl in ms
--       (markers older than it are pruned by a send that remembers its id),
--       '1' for an operator notice, '2' for a person ('user:…', not on the roster), '0' for a
--       member, max entries per inbox, max bytes per inbox,
--       max bytes per team, notice reserve (entries), rate burst, rate per second (0: none),
--       consumer group, the sender's authenticated identity ('' unknown), traceparent ('' none),
--       wake channel (each inbox written is published on it, see bus/wake.rs), '1' to remember
--       this send's id (an id the caller gave), '0' not to.
-- Reply: {'ok' | 'dup', json [[to, stream id], ...]} or {error code, detail}; for
-- 'inbox_full' the detail is "<member> <rule> <limit>", for 'rate_limited' the ms to wait.
local prefix, from, to, kind, body, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl, notice, person = tonumber(ARGV[7]), ARGV[8] == '1', ARGV[8] == '2'
local max_entries, max_bytes, team_bytes = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local reserve, burst, per_second = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local group, by, traceparent, wake = ARGV[15], ARGV[16], ARGV[17], ARGV[18]
local remember = ARGV[19] == '1'
-- What an entry costs beyond its values: field names, ids and the stream's own overhead.
local ENTRY_OVERHEAD = 64

-- One read of the meta fields a send needs (a broadcast reads its inboxes' counts below), and
-- the writes to it gathered into one HSET at the end (`set`; `flush` writes them).
local rate_field = 'rate:' .. from
local meta = redis.call('HMGET', KEYS[1], 'state', 'bytes', 'transcript-bytes', rate_field, 'bytes:' .. to)
local state = meta[1]
if not state then
  return { 'team_not_found', '' }
end
if state ~= 'active' and not notice then
  return { 'team_disbanded', '' }
end
local writes = {}
local function set(field, value)
  table.insert(writes, field)
  table.insert(writes, value)
end
local function flush()
  if #writes > 0 then
    redis.call('HSET', KEYS[1], unpack(writes))
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local marker = from .. '\n' .. id
if remember then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - ttl, 'LIMIT', 0, 100)
  if #expired > 0 then
    redis.call('HDEL', KEYS[3], unpack(expired))
    redis.call('ZREM', KEYS[4], unpack(expired))
  end
  local prior = redis.call('HGET', KEYS[3], marker)
  if prior then
    return { 'dup', prior }
  end
end

local targets = {}
if to == '' then
  local roster = redis.call('HGETALL', KEYS[2])
  local sender = false
  for i = 1, #roster, 2 do
    if roster[i] == from then
      sender = true
    elseif roster[i + 1] ~= 'finished' then
      table.insert(targets, roster[i])
    end
  end
  if not notice and not person and not sender then
    return { 'sender_not_in_team', from }
  end
  table.sort(targets)
else
  local roles = redis.call('HMGET', KEYS[2], from, to)
  if not notice and not person and not roles[1] then
    return { 'sender_not_in_team', from }
  end
  local member = roles[2]
  if not member then
    return { 'unknown_recipient', to }
  end
  if member == 'finished' then
    return { 'recipient_finished', to }
  end
  targets = { to }
end

-- One token per send (a broadcast too: its bytes are counted below, per copy). Spent even when
-- the send is then refused for room.
if not notice and per_second > 0 then
  local tokens, last = burst, now
  local bucket = meta[4]
  if bucket then
    local saved, at = string.match(bucket, '^(%S+) (%S+)$')
    tokens, last = tonumber(saved) or burst, tonumber(at) or now
  end
  tokens = math.min(burst, tokens + math.max(0, now - last) * per_second / 1000)
  if tokens < 1 then
    return { 'rate_limited', tostring(math.ceil((1 - tokens) * 1000 / per_second)) }
  end
  set(rate_field, string.format('%.4f %d', tokens - 1, now))
end

-- The bytes each target's inbox holds, as meta has them.
local held = {}
if to ~= '' then
  held[to] = tonumber(meta[5] or '0')
else
  local fields = {}
  for i, name in ipairs(targets) do
    fields[i] = 'bytes:' .. name
  end
  if #fields > 0 then
    for i, count in ipairs(redis.call('HMGET', KEYS[1], unpack(fields))) do
      held[targets[i]] = tonumber(count or '0')
    end
  end
end
local team_total = tonumber(meta[2])

-- A count left from an inbox that was removed and made again is reset (and taken off the
-- team's) at once: `n` is the inbox's length.
local function reset_stale(name, bytes, n)
  if bytes > 0 and n == 0 then
    redis.call('HDEL', KEYS[1], 'bytes:' .. name)
    redis.call('HINCRBY', KEYS[1], 'bytes', -bytes)
    if team_total then
      team_total = team_total - bytes
    end
    return 0
  end
  return bytes
end

-- The team's total is kept beside the inboxes' counts, so a send costs the same in a team of
-- 10,000 as in a team of 2; a team from before that field has it summed once, here.
if not team_total then
  local total = 0
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes:' .. name) or '0')
    if bytes > 0 then
      bytes = reset_stale(name, bytes, redis.call('XLEN', prefix .. name))
    end
    if held[name] then
      held[name] = bytes
    end
    total = total + bytes
  end
  redis.call('HSET', KEYS[1], 'bytes', total)
  team_total = total
end

local size = #body + #id + #from + #kind + #by + #traceparent + ENTRY_OVERHEAD
local sizes = {}
for _, name in ipairs(targets) do
  sizes[name] = size + #name
end
local entry_cap = max_entries
if notice then
  entry_cap = max_entries + reserve
end

-- The entries of an inbox of length `n`. Acks delete what they acknowledge, so these are unread
-- or in flight; an inbox at the cap that still holds acknowledged entries (written before acks
-- deleted them) first loses those: everything below the oldest pending entry, or up to the last
-- delivered one when none is pending, was acknowledged.
local function entries(inbox, n)
  if n < entry_cap then
    return n
  end
  local floor = nil
  local pending = redis.call('XPENDING', inbox, group)
  if pending[1] > 0 then
    floor = pending[2]
  else
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', inbox)) do
      local fields = {}
      for i = 1, #info, 2 do
        fields[info[i]] = info[i + 1]
      end
      if fields['name'] == group then
        local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
        if ms then
          floor = ms .. '-' .. (tonumber(seq) + 1)
        end
      end
    end
  end
  if floor then
    redis.call('XTRIM', inbox, 'MINID', '=', floor)
  end
  return redis.call('XLEN', inbox)
end
local adding = 0
for _, name in ipairs(targets) do
  local inbox = prefix .. name
  local n = redis.call('XLEN', inbox)
  held[name] = reset_stale(name, held[name], n)
  if entries(inbox, n) >= entry_cap then
    flush()
    return { 'inbox_full', name .. ' entries ' .. entry_cap }
  end
  if not notice and held[name] + sizes[name] > max_bytes then
    flush()
    return { 'inbox_full', name .. ' bytes ' .. max_bytes }
  end
  adding = adding + sizes[name]
end
if not notice and adding + team_total > team_bytes then
  flush()
  return { 'inbox_full', (to ~= '' and to or '*') .. ' team_bytes ' .. team_bytes }
end

-- The fields of an entry to `name`; the optional ones only when known.
local function entry(name, entry_size)
  local fields = { 'id', id, 'from', from, 'to', name, 'kind', kind, 'body', body, 'ts', tostring(now),
    'size', tostring(entry_size) }
  if by ~= '' then
    table.insert(fields, 'by')
    table.insert(fields, by)
  end
  if traceparent ~= '' then
    table.insert(fields, 'traceparent')
    table.insert(fields, traceparent)
  end
  return fields
end

local delivered = {}
for _, name in ipairs(targets) do
  local sid = redis.call('XADD', prefix .. name, '*', unpack(entry(name, sizes[name])))
  set('bytes:' .. name, held[name] + sizes[name])
  team_total = team_total + sizes[name]
  redis.call('PUBLISH', wake, prefix .. name)
  table.insert(delivered, { name, sid })
end

if #delivered > 0 then
  set('bytes', team_total)
  redis.call('XADD', KEYS[5], '*', unpack(entry(to ~= '' and to or '*', size)))
  local kept = tonumber(meta[3] or '0') + size
  -- Trimmed only past the budget: the oldest entries first, 16 read at a time.
  while kept > team_bytes do
    local oldest = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 16)
    if #oldest == 0 then
      kept = 0
      break
    end
    for _, e in ipairs(oldest) do
      local fields = e[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'size' then
          kept = kept - (tonumber(fields[i + 1]) or 0)
        end
      end
      redis.call('XDEL', KEYS[5], e[1])
      if kept <= team_bytes then
        break
      end
    end
  end
  set('transcript-bytes', math.max(kept, 0))
end
flush()
-- cjson encodes an empty table as an object; a broadcast to nobody is an empty list.
local encoded = '[]'
if #delivered > 0 then
  encoded = cjson.encode(delivered)
end
if remember then
  redis.call('HSET', KEYS[3], marker, encoded)
  redis.call('ZADD', KEYS[4], now, marker)
end
return { 'ok', encoded }
