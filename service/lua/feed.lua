-- Read a shard's stream for the change feed: whole entries from a position on, until they
-- hold `want` changes after it, or the stream ends. XRANGE's COUNT counts entries, and an
-- entry of a batch's tickets holds up to a hundred changes: a page of a thousand changes
-- would read a thousand entries, and hand back a hundred times what it returns.
--
-- KEYS[1]  stream  change stream of the shard   events:{<shard>}
-- ARGV[1]  start   '-' (the beginning), or the position, inclusive: the entry holding it
--                  comes first (an entry's own id is its changes' last), so that the caller
--                  sees whether it was trimmed away
-- ARGV[2]  want    changes after the position to read, at least
-- Returns  {have, entry1, entry2, ...}: have, the changes after the position that the
--          entries hold (fewer than want only at the stream's end); each entry as XRANGE
--          gives it, {id, {field, value, ...}}
local stream, start, want = KEYS[1], ARGV[1], tonumber(ARGV[2])

local function id_of(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local pms, pseq = -1, -1
if start ~= '-' then pms, pseq = id_of(start) end

-- The changes of an entry after the position: its tickets' ids end at its own.
local function after_position(entry)
  local fields = entry[2]
  local size = 1
  if fields[1] == 'ids' then size = select(2, string.gsub(fields[2], ',', ',')) + 1 end
  local ms, seq = id_of(entry[1])
  if ms > pms then return size end
  return math.max(0, math.min(size, seq - pseq))
end

local out, have, from = {0}, 0, start
while have < want do
  -- One more than the events still wanted: the position's own entry may count none.
  local count = math.min(want - have + 1, 256)
  local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', count)
  for _, entry in ipairs(entries) do
    out[#out + 1] = entry
    have = have + after_position(entry)
    if have >= want then break end
  end
  if #entries < count then break end
  from = '(' .. entries[#entries][1]
end
out[1] = have
return out
