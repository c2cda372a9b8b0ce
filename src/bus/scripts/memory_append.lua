-- Appends to an agent's memory and keeps only the newest cap bytes, atomically, so concurrent
-- appenders never overwrite each other. Lua strings are bytes: the cut moves forward past UTF-8
-- continuation bytes (0x80-0xBF) so the kept text starts on a character and stays valid.
--
-- KEYS: memory.  ARGV: text (valid UTF-8), cap in bytes.
-- Reply: {stored bytes, 1 if older text was dropped else 0}.
local cap = tonumber(ARGV[2])
local text = (redis.call('GET', KEYS[1]) or '') .. ARGV[1]
local dropped = 0
if #text > cap then
  local start = #text - cap + 1
  while start <= #text do
    local b = string.byte(text, start)
    if b < 0x80 or b >= 0xC0 then
      break
    end
    start = start + 1
  end
  text = string.sub(text, start)
  dropped = 1
end
redis.call('SET', KEYS[1], text)
return { #text, dropped }
