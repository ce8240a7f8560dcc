-- Issue a batch of tickets of one event in one step, all or nothing: every ticket is in
-- this shard (an event's tickets live with it; a batch of the default event is placed in
-- one shard), so the event's count and every ticket are decided together. A ticket that
-- already exists is not made again (the ids of a re-sent or idempotent batch are derived
-- from its request, so a retry finds the tickets it made); if none is missing, the answer
-- is a replay.
-- A replayed answer counts in the shard's `replayed`: a write, so that the WAIT after the
-- script (with replicas) covers the first answer's own write too.
--
-- The stream takes one entry per PER_ENTRY new tickets, not one each: a `created` entry
-- costs Redis about as much as the ticket's own hash, and a batch's entries differ only in
-- the ticket. Such an entry names its tickets in `ids`, and takes as many consecutive ids as
-- it has tickets, its own the last: the ticket's changes keep ids of their own, in order
-- (entries.entry_changes). The stream's cap counts these changes, not entries: the shard's
-- `stream_extra` counts the changes beyond one per entry that its batch entries hold, each
-- listed in `batches`, and a batch trims the stream's oldest entries until the stream's
-- changes are within the cap.
--
-- KEYS[1]  index  id index of the shard       tickets:{<shard>}
-- KEYS[2]  stats  counters of the shard       stats:{<shard>}
-- KEYS[3]  stream  change stream of the shard   events:{<shard>}
-- KEYS[4]  batches  the stream's batch entries  batches:{<shard>}   (list of '<entry id> <extra> <place>')
-- KEYS[5]  event  the event's hash            evt:{<shard>}:<event id>   (only when ARGV[5] is '1')
-- KEYS[..]  tickets  the tickets' hashes, from position ARGV[6] on, one per ticket
-- ARGV[1]  actor          API key name
-- ARGV[2]  request_id
-- ARGV[3]  client_ip
-- ARGV[4]  events_maxlen  cap of the stream, in changes
-- ARGV[5]  has_event      '1' for an event's tickets, '0' for the default event's
-- ARGV[6]  first          position in KEYS of the first ticket's hash
-- ARGV[7]  kinds          how many kinds of ticket the batch holds (k)
-- ARGV[8..]  per_kind  per kind, 5 values: ty, h, st, vf, vu ('' for a field it lacks)
-- ARGV[8 + 5k..]  per_ticket  per ticket, 2 values: id, and its kind (1 to k)
-- Returns  {'created', 0, ts} when every ticket is new (all made now, at ts), else
--          {outcome, replayed, ts1, valid1, ts2, valid2, ...} in ticket order
--          outcome: 'created', 'no_event' or 'sold_out' (then nothing was made)
local actor, request_id, client_ip, events_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local has_event, first = ARGV[5] == '1', tonumber(ARGV[6])
local index, stats, stream, batches = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local event = has_event and KEYS[5] or nil
-- A feed read takes whole entries: at most PER_ENTRY - 1 changes a shard beyond those it needs.
local PER_ENTRY = 100
local n = #KEYS - first + 1
local NAMES = {'ty', 'h', 'st', 'vf', 'vu'}

-- One EXISTS for all the tickets: a batch is made all at once, so its tickets all exist (a
-- replay) or none does; only a mix (never made by this script) is looked at one by one.
local missing = {}
local found = redis.call('EXISTS', unpack(KEYS, first))
if found == 0 then
  for i = 1, n do missing[i] = i end
elseif found < n then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[first + i - 1]) == 0 then missing[#missing + 1] = i end
  end
end
if event and #missing > 0 then
  local ev = redis.call('HMGET', event, 'name', 'capacity', 'issued')
  if not ev[1] then return {'no_event', 0} end
  if ev[2] and ev[2] ~= '' and tonumber(ev[3] or '0') + #missing > tonumber(ev[2]) then
    return {'sold_out', 0}
  end
  redis.call('HINCRBY', event, 'issued', #missing)
end
local now = redis.call('TIME')
local ts = now[1] .. string.format('%06d', tonumber(now[2]))
-- Each redis.call costs about as much again as the command it runs: the index takes the
-- new ids in one SADD, and the answer reads back only the tickets that existed before.
-- A batch's items are mostly alike: each kind's fields are sent and built once, and a
-- ticket names its kind: 2 values a ticket, not 6, cost Redis 7% less CPU for a batch.
local hashes = {}
local kinds = tonumber(ARGV[7])
for k = 1, kinds do
  local fields = {'ts', ts, 'valid', '1'}
  for f = 1, 5 do
    local v = ARGV[7 + (k - 1) * 5 + f]
    if v ~= '' then fields[#fields + 1], fields[#fields + 2] = NAMES[f], v end
  end
  hashes[tostring(k)] = fields
end
local made = {}
local base = 8 + kinds * 5
for _, i in ipairs(missing) do
  local a = base + (i - 1) * 2
  redis.call('HSET', KEYS[first + i - 1], unpack(hashes[ARGV[a + 1]]))
  made[#made + 1] = ARGV[a]
end

-- Stream ids as numbers: 13 digits of ms and a small sequence are exact in a Lua double.
local function id_of(text)
  local ms, seq = string.match(text, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function older(a, b)
  local ams, aseq = id_of(a)
  local bms, bseq = id_of(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

-- A listed batch entry: its id, the changes it holds beyond one, and its place among every
-- entry the stream was ever given (XINFO's entries-added when it was added).
local function listed_at(j)
  local listed = redis.call('LINDEX', batches, j)
  if not listed then return nil end
  local id, more, place = string.match(listed, '^(%S+) (%d+) (%d+)$')
  return id, tonumber(more), tonumber(place)
end

-- Forget the listed batch entries that the stream no longer holds (every write trims it).
local function forget_trimmed(extra)
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  while head do
    local id, more = listed_at(0)
    if not id or not older(id, head[1]) then break end
    redis.call('LPOP', batches)
    extra = extra - more
  end
  return extra
end

-- Trim the oldest entries until the stream's changes are within the cap, the newest entry
-- kept (the next batch's ids follow on from it). Entries are counted by place, not read:
-- the head's place is entries-added - length + 1 (the service deletes none), and every
-- entry between two listed ones is a single change. Returns the changes beyond one per entry.
local function trim_to_cap(extra, added)
  local len = redis.call('XLEN', stream)
  local excess = len + extra - tonumber(events_maxlen)
  local head = added - len + 1
  local cut, j = head, 0  -- the place of the first entry kept
  while excess > 0 do
    local id, more, place = listed_at(j)
    if not id or excess <= place - cut then
      cut = cut + excess
      break
    end
    excess = excess - (place - cut) - 1 - more
    cut, j = place + 1, j + 1
  end
  cut = math.min(cut, added)
  if cut <= head then return extra end
  redis.call('XTRIM', stream, 'MAXLEN', len - (cut - head))
  return forget_trimmed(extra)
end

-- The stream's last id (its newest entry's, or one trimmed or deleted since), and how many
-- entries it was ever given.
local function stream_info()
  if redis.call('EXISTS', stream) == 0 then return nil, 0 end
  local info = redis.call('XINFO', 'STREAM', stream)
  local last, added
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  return last, added
end

local function add_entries()
  -- The ids `*` would give (after the last id, now if later), taken explicitly, as an entry
  -- of w tickets takes w of them. A refused id would fail the script after its writes.
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local seq = -1
  local last, added = stream_info()
  if last then
    local lms, lseq = id_of(last)
    if lms >= ms then ms, seq = lms, lseq end
  end
  local extra, listed = 0, {}
  for c = 1, #made, PER_ENTRY do
    local w = math.min(PER_ENTRY, #made - c + 1)
    seq = seq + w
    local id = string.format('%d-%d', ms, seq)
    if w == 1 then
      redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, id,
        't', made[c], 'e', 'created', 'ts', ts, 'a', actor, 'r', request_id, 'ip', client_ip)
    else
      redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, id,
        'ids', table.concat(made, ',', c, c + w - 1), 'e', 'created', 'ts', ts, 'a', actor,
        'r', request_id, 'ip', client_ip)
      extra = extra + w - 1
      listed[#listed + 1] = string.format('%s %d %d', id, w - 1, added + 1)
    end
    added = added + 1
  end
  if extra == 0 then return end
  redis.call('RPUSH', batches, unpack(listed))
  extra = forget_trimmed(extra + tonumber(redis.call('HGET', stats, 'stream_extra') or '0'))
  redis.call('HSET', stats, 'stream_extra', trim_to_cap(extra, added))
end

if #missing > 0 then
  add_entries()
  redis.call('SADD', index, unpack(made))
  redis.call('HINCRBY', stats, 'total', #missing)
  redis.call('HINCRBY', stats, 'valid', #missing)
else
  redis.call('HINCRBY', stats, 'replayed', 1)
end
if #missing == n then
  return {'created', 0, ts}  -- one time for all: a thousand times the same two values is not news
end
local out = {'created', #missing == 0 and 1 or 0}
local new = {}
for _, i in ipairs(missing) do new[i] = true end
for i = 1, n do
  if new[i] then
    out[#out + 1], out[#out + 2] = ts, '1'
  else
    local t = redis.call('HMGET', KEYS[first + i - 1], 'ts', 'valid')
    out[#out + 1], out[#out + 2] = t[1], t[2]
  end
end
return out
