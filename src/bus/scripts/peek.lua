-- A person's look at a member's inbox: the entries the member has not acked yet (delivered and
-- pending, then not yet delivered), oldest first, without delivering or acking any. The member's
-- consumer group is only read, so the member still gets every message.
--
-- KEYS: meta, roster, inbox.  ARGV: group, member, batch size.
-- Reply: {outcome, entries, last id}; outcome is 'ready' (entries to return), 'block' (nothing
-- unacked: the caller waits for what comes after `last id`, the stream's newest entry), or
-- 'team_disbanded', 'team_not_found', 'member_not_in_team'.
local group, member, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])

local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return { 'team_not_found', {}, '' }
end
if redis.call('HEXISTS', KEYS[2], member) == 0 then
  return { 'member_not_in_team', {}, '' }
end

local entries = {}
local delivered_up_to = '0-0'
local has_group = false
if redis.call('EXISTS', KEYS[3]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[3])) do
    local fields = {}
    for i = 1, #g, 2 do
      fields[g[i]] = g[i + 1]
    end
    if fields['name'] == group then
      has_group = true
      delivered_up_to = fields['last-delivered-id']
    end
  end
end
if has_group then
  for _, p in ipairs(redis.call('XPENDING', KEYS[3], group, '-', '+', batch, member)) do
    local e = redis.call('XRANGE', KEYS[3], p[1], p[1])
    if e[1] then
      table.insert(entries, e[1])
    end
  end
end
if #entries < batch then
  for _, e in ipairs(redis.call('XRANGE', KEYS[3], '(' .. delivered_up_to, '+', 'COUNT', batch - #entries)) do
    table.insert(entries, e)
  end
end
if #entries > 0 then
  return { 'ready', entries, '' }
end
if state == 'disbanded' then
  return { 'team_disbanded', {}, '' }
end
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local last = '0-0'
if newest[1] then
  last = newest[1][1]
end
return { 'block', {}, last }
