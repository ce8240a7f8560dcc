-- Remove imported tickets of one source that were never scanned, in one step per call
-- (store/imports.py calls it for the source's tickets a page at a time): a ticket is kept
-- if it was ever admitted at a list (an `in:<list>` field stays after an annul) or is used
-- (`valid` '0'); a kept ticket stays in its source. A removed ticket's hash, index entry and
-- counts go, and a `removed` change says so (the tickets processor drops its history; a gate
-- forgets its code). A scan of the ticket decided before this call counts it as scanned; one
-- after it finds no ticket.
--
-- Must change together: import_codes.lua (what this undoes), checkin.lua and annul.lua (the
-- fields that say a ticket was scanned), process.lua (`removed`).
--
-- KEYS[1]  index  id index of the shard        tickets:{<shard>}
-- KEYS[2]  stats  counters of the shard        stats:{<shard>}
-- KEYS[3]  stream  change stream of the shard    events:{<shard>}
-- KEYS[4]  event  the event's hash             evt:{<shard>}:<event id>
-- KEYS[5]  source  the source's tickets (set)   imp:{<shard>}:<event id>:<source>
-- KEYS[6..]  tickets  the hashes of the tickets to remove, in ARGV's order
-- ARGV[1]  actor          API key name
-- ARGV[2]  request_id
-- ARGV[3]  client_ip
-- ARGV[4]  events_maxlen  approximate cap of the stream
-- ARGV[5]  source         the source's name
-- ARGV[6..]  ids  the tickets' ids, one per hash in KEYS
-- Returns  {removed, kept id 1, kept code 1, kept id 2, ...}: how many were removed, and the
--          tickets kept (scanned), each with its code
local actor, request_id, client_ip, events_maxlen, source = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local index, stats, stream, event, members = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local FIRST = 6
local COUNTER = {['1'] = 'valid', ['0'] = 'invalid', r = 'revoked'}

local function scanned(ticket, valid)
  if valid == '0' then return true end
  for _, name in ipairs(redis.call('HKEYS', ticket)) do
    if name == 'u1' or string.sub(name, 1, 3) == 'in:' then return true end
  end
  return false
end

local now = redis.call('TIME')
local ts = now[1] .. string.format('%06d', tonumber(now[2]))
local out, removed = {0}, 0
for i = FIRST, #KEYS do
  local ticket, id = KEYS[i], ARGV[i]
  local held = redis.call('HMGET', ticket, 'valid', 'code', 'src')
  if redis.call('SISMEMBER', members, id) == 0 then
    -- withdrawn meanwhile (a concurrent call), or never this source's: nothing to do
  elseif not held[1] or held[3] ~= source then
    redis.call('SREM', members, id)  -- a member whose ticket is gone: tidied
  elseif scanned(ticket, held[1]) then
    out[#out + 1], out[#out + 2] = id, held[2]
  else
    redis.call('DEL', ticket)
    redis.call('SREM', index, id)
    redis.call('SREM', members, id)
    redis.call('HINCRBY', stats, 'total', -1)
    redis.call('HINCRBY', stats, COUNTER[held[1]], -1)
    redis.call('HINCRBY', event, 'issued', -1)
    redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, '*', 't', id, 'e', 'removed', 'ts', ts,
      'a', actor, 'r', request_id, 'ip', client_ip, 'src', source)
    removed = removed + 1
  end
end
out[1] = removed
return out
