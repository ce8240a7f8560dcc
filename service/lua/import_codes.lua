-- Import tickets sold elsewhere into an event, all or nothing: each outside code becomes a
-- ticket whose id the code determines (store/imports.py derives it, a keyed hash of the event
-- and the code), so that a scan of the code finds its ticket in one read, and a code already
-- imported into the event is found by its id. Every ticket is in the event's shard: the
-- event's count, the duplicates and every ticket are decided together.
-- A ticket that exists already is this call's own when its `im` is this call's mark (a retry
-- of the same request: nginx re-sending it, the same Idempotency-Key): if every ticket is
-- the call's own, the answer is a replay. Any other existing ticket is a duplicate: nothing
-- is made, and the answer names them.
-- A replayed answer counts in the shard's `replayed`: a write, so that the WAIT after the
-- script (with replicas) covers the first answer's own write too.
--
-- Must change together: store/imports.py (KEYS, ARGV, the id and digest of a code),
-- withdraw.lua (undoes what this makes), store/entries.py (the entry's fields), feed.py
-- (`code`, `src` read for a gate's book), tickets.py (`code`, `src` read for a ticket).
--
-- Ticket hash fields this script adds to create.lua's: code (the outside code, as given),
-- src (its source), im (the mark of the call that imported it).
--
-- KEYS[1]  index  id index of the shard        tickets:{<shard>}
-- KEYS[2]  stats  counters of the shard        stats:{<shard>}
-- KEYS[3]  stream  change stream of the shard    events:{<shard>}
-- KEYS[4]  event  the event's hash             evt:{<shard>}:<event id>
-- KEYS[5]  source  the source's tickets (set)   imp:{<shard>}:<event id>:<source>
-- KEYS[6..]  tickets  the tickets' hashes, one per code, in the call's order
-- ARGV[1]  actor          API key name
-- ARGV[2]  request_id
-- ARGV[3]  client_ip
-- ARGV[4]  events_maxlen  approximate cap of the stream
-- ARGV[5]  source         the source's name
-- ARGV[6]  mark           this call's mark (a digest of its request, or random)
-- ARGV[7]  kinds          how many kinds of ticket the call holds (k)
-- ARGV[8..]  per_kind  per kind, 5 values: ty, h, st, vf, vu ('' for a field it lacks)
-- ARGV[8 + 5k..]  per_ticket  per ticket, 4 values: id, code, code digest, kind (1 to k)
-- Returns  {'imported', replayed, ts1, valid1, ts2, valid2, ...} in ticket order; or
--          {'duplicate', i, j, ...}: the positions (1-based) of codes already imported
--          otherwise; or {'no_event'}, {'sold_out'}: then nothing was made
local actor, request_id, client_ip, events_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local source, mark, kinds = ARGV[5], ARGV[6], tonumber(ARGV[7])
local index, stats, stream, event, members = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local FIRST = 6
local n = #KEYS - FIRST + 1
local base = 8 + kinds * 5
local NAMES = {'ty', 'h', 'st', 'vf', 'vu'}

local ev = redis.call('HMGET', event, 'name', 'capacity', 'issued')
if not ev[1] then return {'no_event'} end

-- One EXISTS for all: an import's codes are new (none found), or a retry's (all found).
local missing, duplicates = {}, {}
local found = redis.call('EXISTS', unpack(KEYS, FIRST))
for i = 1, n do
  if found == 0 then
    missing[#missing + 1] = i
  elseif redis.call('EXISTS', KEYS[FIRST + i - 1]) == 0 then
    missing[#missing + 1] = i
  elseif redis.call('HGET', KEYS[FIRST + i - 1], 'im') ~= mark then
    duplicates[#duplicates + 1] = i
  end
end
if #duplicates > 0 then return {'duplicate', unpack(duplicates)} end
if #missing > 0 then
  if ev[2] and ev[2] ~= '' and tonumber(ev[3] or '0') + #missing > tonumber(ev[2]) then
    return {'sold_out'}
  end
  redis.call('HINCRBY', event, 'issued', #missing)
end

local now = redis.call('TIME')
local ts = now[1] .. string.format('%06d', tonumber(now[2]))
local fields = {}
for k = 1, kinds do
  local f = {}
  for j = 1, 5 do f[j] = ARGV[7 + (k - 1) * 5 + j] end
  fields[tostring(k)] = f
end
local made = {}
for _, i in ipairs(missing) do
  local a = base + (i - 1) * 4
  local id, code, digest, kind = ARGV[a], ARGV[a + 1], ARGV[a + 2], fields[ARGV[a + 3]]
  local hash = {'ts', ts, 'valid', '1', 'code', code, 'src', source, 'im', mark}
  local entry = {'t', id, 'e', 'created', 'ts', ts, 'a', actor, 'r', request_id, 'ip', client_ip,
                 'src', source, 'cd', digest}
  for j = 1, 5 do
    if kind[j] ~= '' then hash[#hash + 1], hash[#hash + 2] = NAMES[j], kind[j] end
  end
  -- A gate judges an imported code offline by what its created change says (no signed token
  -- carries it): its type and validity window, not its holder or seat.
  if kind[1] ~= '' then entry[#entry + 1], entry[#entry + 2] = 'ty', kind[1] end
  if kind[4] ~= '' then entry[#entry + 1], entry[#entry + 2] = 'vf', kind[4] end
  if kind[5] ~= '' then entry[#entry + 1], entry[#entry + 2] = 'vu', kind[5] end
  redis.call('HSET', KEYS[FIRST + i - 1], unpack(hash))
  redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, '*', unpack(entry))
  made[#made + 1] = id
end

if #made > 0 then
  redis.call('SADD', index, unpack(made))
  redis.call('SADD', members, unpack(made))
  redis.call('HINCRBY', stats, 'total', #made)
  redis.call('HINCRBY', stats, 'valid', #made)
else
  redis.call('HINCRBY', stats, 'replayed', 1)
end
local out = {'imported', #made == 0 and 1 or 0}
local new = {}
for _, i in ipairs(missing) do new[i] = true end
for i = 1, n do
  if new[i] then
    out[#out + 1], out[#out + 2] = ts, '1'
  else
    local t = redis.call('HMGET', KEYS[FIRST + i - 1], 'ts', 'valid')
    out[#out + 1], out[#out + 2] = t[1], t[2]
  end
end
return out
