-- Prepended by scripts.rs to ack.lua and wait_ready.lua, which both acknowledge what a member
-- hands back. Acks the ids ARGV[first..] that are pending for `group` (acking twice is
-- harmless: only pending entries count), deletes them and takes their size off the member's
-- byte count and the team's in meta (send.lua keeps them). An invalid id fails the whole script
-- and changes nothing: every id not of the form <ms>-<seq> (which XACK cannot refuse) is first
-- put to XPENDING, which refuses it with Redis's own error, before anything is written. XACK of
-- one id then says whether it was pending, so a valid id costs one command, not a check and an
-- ack.
-- `counts`: the member's and the team's counts from meta ({bytes:<member>, bytes}) when the
-- caller has read them, else nil (read here when something was freed). Returns the count acked.
local function ack_entries(meta, inbox, group, member, first, counts)
  for i = first, #ARGV do
    local ms, seq = string.match(ARGV[i], '^(%d+)%-(%d+)$')
    -- 19 digits stay below 2^64, the largest part an id may have.
    if not (ms and #ms <= 19 and #seq <= 19) then
      redis.call('XPENDING', inbox, group, ARGV[i], ARGV[i], 1)
    end
  end
  local pending, seen = {}, {}
  for i = first, #ARGV do
    local sid = ARGV[i]
    if not seen[sid] then
      seen[sid] = true
      if redis.call('XACK', inbox, group, sid) > 0 then
        table.insert(pending, sid)
      end
    end
  end
  local acked = #pending
  if acked == 0 then
    return 0
  end
  local freed, present = 0, {}
  for _, sid in ipairs(pending) do
    local entry = redis.call('XRANGE', inbox, sid, sid)[1]
    if entry then
      local fields = entry[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'size' then
          freed = freed + (tonumber(fields[j + 1]) or 0)
        end
      end
      table.insert(present, sid)
    end
  end
  if #present > 0 then
    redis.call('XDEL', inbox, unpack(present))
  end
  if freed > 0 then
    counts = counts or redis.call('HMGET', meta, 'bytes:' .. member, 'bytes')
    local writes = { 'bytes:' .. member, math.max(0, (tonumber(counts[1]) or 0) - freed) }
    -- The team's total likewise, once send.lua has made it.
    if counts[2] then
      table.insert(writes, 'bytes')
      table.insert(writes, math.max(0, (tonumber(counts[2]) or 0) - freed))
    end
    redis.call('HSET', meta, unpack(writes))
  end
  return acked
end
