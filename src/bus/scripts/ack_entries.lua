-- Prepended by scripts.rs to ack.lua and wait_ready.lua, which both acknowledge what a member
-- hands back. Acks the ids ARGV[first..] that are pending for `group` (acking twice is
-- harmless: only pending entries count), deletes them and takes their size off the member's
-- byte count and the team's in meta (send.lua keeps them). Every id is checked (XPENDING)
-- before anything is written, so an invalid id fails the whole script and changes nothing.
-- Returns the count acked.
local function ack_entries(meta, inbox, group, member, first)
  local pending = {}
  for i = first, #ARGV do
    if #redis.call('XPENDING', inbox, group, ARGV[i], ARGV[i], 1) > 0 then
      table.insert(pending, ARGV[i])
    end
  end
  local acked, freed = 0, 0
  for _, sid in ipairs(pending) do
    acked = acked + redis.call('XACK', inbox, group, sid)
    local entry = redis.call('XRANGE', inbox, sid, sid)[1]
    if entry then
      local fields = entry[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'size' then
          freed = freed + (tonumber(fields[j + 1]) or 0)
        end
      end
      redis.call('XDEL', inbox, sid)
    end
  end
  if freed > 0 and redis.call('HINCRBY', meta, 'bytes:' .. member, -freed) < 0 then
    redis.call('HSET', meta, 'bytes:' .. member, 0)
  end
  -- The team's total likewise, once send.lua has made it.
  if freed > 0 and redis.call('HEXISTS', meta, 'bytes') == 1 and redis.call('HINCRBY', meta, 'bytes', -freed) < 0 then
    redis.call('HSET', meta, 'bytes', 0)
  end
  return acked
end

