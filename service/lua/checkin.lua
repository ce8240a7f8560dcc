-- One scan at a gate, decided and recorded in one step: the ticket against the list
-- (event, type, validity window, status, single entry or re-entry, the area's occupancy and
-- capacity), the areas that entering here checks the holder out of, the counters, the
-- ticket's change for its history, and what an annul needs to undo it.
-- A replayed answer counts in the shard's `replayed`: a write, so that the WAIT after the
-- script (with replicas) covers the first answer's own write too.
--
-- Invariants kept (docs/checkin.md#check-in-invariants; tests/test_model.py checks them): a revoked
-- ticket is never admitted; 0 <= inside <= capacity; a single-entry list admits a ticket
-- once; every counter moves with the change it counts; an answer is replayed only to the
-- request that earned it (the record's key is the caller's request id and what it asks);
-- a device's clock is believed only for an offline upload, within bounds.
-- Must change together: annul.lua (it undoes what this records), transition.lua (`valid`,
-- `p`), store/checkin.py (KEYS, ARGV), web/gate/book.js (the offline twin of decide_entry),
-- tests/test_model.py (the reference model), tests/cases/checkin.json (cases run against this
-- script and book.js alike).
--
-- Ticket hash fields this script keeps (see create.lua for the rest):
--   a:<list>    when the ticket was first admitted on the list (integer microseconds)
--   in:<list>   '1' while inside the list's area
--   u1          '<list>|<us>' of the ticket's first admission on any list
--   p           '1' while the seed's plain invalidate has it used (transition.lua)
--   last:<list> the last admitted scan on the list, for annul (and an upload's own scan):
--               '<dir>|<us>|<actor>|<flipped valid>|<lists left>|<set a:>|<set u1>|<scanned_at>'
-- List hash counters: inside, admitted, exits, r:<reason> per refusal reason, and conflicts
-- (offline admissions the list had already refused, by their reason: c:<reason>).
--
-- KEYS[1]  list  the list's hash            lst:{<shard>}:<list id>
-- KEYS[2]  event  the event's hash           evt:{<shard>}:<event id>
-- KEYS[3]  stats  counters of the shard      stats:{<shard>}
-- KEYS[4]  stream  change stream of the shard  events:{<shard>}
-- KEYS[5]  record  replay record             replay:{<shard>}:<id>:<hash>  or  idem:{<shard>}:<hash>:answer
-- KEYS[6]  ticket  the ticket's hash          t:{<shard>}:<id>     (absent: a ticket of another event)
-- KEYS[7..]  left  the hashes of the lists this list leaves, in the order of its `leaves`
-- ARGV[1]  list_id
-- ARGV[2]  direction     'entry' or 'exit'
-- ARGV[3]  scanned_at    integer microseconds when the device scanned, '' for none: recorded;
--                        judged only for an offline upload, and then no later than now and
--                        no earlier than now - ARGV[12] (a device's clock is not believed)
-- ARGV[4]  actor         API key name
-- ARGV[5]  request_id
-- ARGV[6]  client_ip
-- ARGV[7]  events_maxlen approximate cap of the stream
-- ARGV[8]  ticket_id
-- ARGV[9]  ttl_s         of the replay record
-- ARGV[10] refusal       a reason decided before Redis ('' for none): a ticket token with a
--                        bad signature or an unknown key, refused and counted, nothing read
-- ARGV[11] offline       '1' when the device already admitted the holder while offline and
--                        uploads the scan now: a refusal is then a conflict (the holder is
--                        in), recorded as checkin_conflict and counted in `conflicts`;
--                        unless the scan itself had landed (this key's last scan here, with
--                        the same scan time): then admitted, recording nothing again
-- ARGV[12] offline_max_age_us  how far back an offline upload's scan time is believed
-- Returns  {admitted, reason, inside, used_at, used_list, ts, valid, ty, h, st, vf, vu}, or
--          {0, 'no_list'} when the list does not exist (nothing recorded)
--          admitted: 1 or 0; reason: '' when admitted, else a refusal code; inside: the
--          list's occupancy after the scan; used_at, used_list: the first admission, for
--          already_used ('' otherwise); then the ticket (ts '' for none, see create.lua).
--          The same request again (nginx re-sending it, the same Idempotency-Key) gets this
--          answer back from the replay record, with nothing decided or recorded twice; its
--          first element is then 'replayed:1' or 'replayed:0' in place of admitted.
local list_id, direction, scanned_at = ARGV[1], ARGV[2], ARGV[3]
local actor, request_id, client_ip, events_maxlen, ticket_id = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ttl_s, forced, offline, max_age_us = ARGV[9], ARGV[10] or '', ARGV[11] == '1', tonumber(ARGV[12])
local list, event, stats, stream, record, ticket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local FIELDS = {'ts', 'valid', 'ty', 'h', 'st', 'vf', 'vu'}
local SEP = '\31'

local prior = redis.call('GET', record)
if prior then
  local out = {}
  for part in string.gmatch(prior .. SEP, '([^' .. SEP .. ']*)' .. SEP) do out[#out + 1] = part end
  out[1] = 'replayed:' .. out[1]
  redis.call('HINCRBY', stats, 'replayed', 1)
  return out
end

local now = redis.call('TIME')
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
-- The time the scan is judged at: now, for a scan online (the holder is at the gate now, and
-- a phone's clock may be wrong); for an offline upload the device's time, within bounds: no
-- later than now (a clock ahead would admit tickets not yet valid), no earlier than the
-- oldest upload believed. Kept as an integer string for what is stored, and as a number for
-- comparing: Lua turns a number into a string with 14 significant digits, and microseconds
-- since the epoch have 16 ('x|' .. 1796159714820747 is 'x|1.7961597148207e+15').
local at_text = now_us
if offline and scanned_at ~= '' then
  local claimed, oldest = tonumber(scanned_at), tonumber(now_us) - max_age_us
  if claimed < oldest then
    at_text = string.format('%.0f', oldest)
  elseif claimed < tonumber(now_us) then
    at_text = scanned_at
  end
end
local at_us = tonumber(at_text)
local cfg = redis.call('HMGET', list, 'types', 'reentry', 'capacity', 'leaves', 'inside')
if not cfg[2] then
  return {0, 'no_list'}
end
local t = {}
if ticket then
  t = redis.call('HMGET', ticket, unpack(FIELDS))
end
local used_at, used_list = '', ''

local function has_type(types, ty)
  if types == '' then return true end
  if not ty then return false end
  for each in string.gmatch(types, '[^,]+') do
    if each == ty then return true end
  end
  return false
end

local function decide_entry()
  if not ticket then return 'wrong_event' end
  if not t[1] then return 'unknown_ticket' end
  if t[2] == 'r' then return 'revoked' end
  if not has_type(cfg[1], t[3] or false) then return 'type_not_allowed' end
  local ev = redis.call('HMGET', event, 'starts_at', 'ends_at')
  local from = tonumber((t[6] and t[6] ~= '') and t[6] or ev[1] or '')
  local to = tonumber((t[7] and t[7] ~= '') and t[7] or ev[2] or '')
  if from and at_us < from then return 'too_early' end
  if to and at_us > to then return 'expired' end
  if cfg[2] == '1' then
    if redis.call('HGET', ticket, 'in:' .. list_id) == '1' then return 'already_inside' end
  else
    local first = redis.call('HGET', ticket, 'a:' .. list_id)
    if first then
      used_at, used_list = first, list_id
      return 'already_used'
    end
    if t[2] == '0' then
      local seen = redis.call('HMGET', ticket, 'u1', 'p')
      if not seen[1] or seen[2] == '1' then
        return 'already_used'  -- used at a plain (seed) scan: no list, no time
      end
    end
  end
  if cfg[3] ~= '' and tonumber(cfg[5]) >= tonumber(cfg[3]) then return 'area_full' end
  return ''
end

local function admit()
  local flipped = '0'
  redis.call('HINCRBY', list, 'inside', 1)
  redis.call('HINCRBY', list, 'admitted', 1)
  redis.call('HSET', ticket, 'in:' .. list_id, '1')
  local first = redis.call('HSETNX', ticket, 'a:' .. list_id, at_text)
  local u1 = redis.call('HSETNX', ticket, 'u1', list_id .. '|' .. at_text)
  if cfg[2] ~= '1' and t[2] == '1' then
    -- A single-entry admission uses the ticket: the seed's plain scan refuses it after.
    redis.call('HSET', ticket, 'valid', '0')
    redis.call('HINCRBY', stats, 'valid', -1)
    redis.call('HINCRBY', stats, 'invalid', 1)
    flipped = '1'
  end
  local left = {}
  local i = 7
  for other in string.gmatch(cfg[4], '[^,]+') do
    if KEYS[i] and redis.call('HGET', ticket, 'in:' .. other) == '1' then
      redis.call('HSET', ticket, 'in:' .. other, '0')
      redis.call('HINCRBY', KEYS[i], 'inside', -1)
      redis.call('HINCRBY', KEYS[i], 'exits', 1)
      left[#left + 1] = other
    end
    i = i + 1
  end
  return {flipped, table.concat(left, ','), first, u1}
end

local reason, undo, uploaded = '', {'0', '', 0, 0}, false
if forced ~= '' then
  reason = forced
elseif direction == 'entry' then
  reason = decide_entry()
  if reason == '' then undo = admit() end
  if offline and scanned_at ~= '' and (reason == 'already_used' or reason == 'already_inside') then
    -- The device's own scan already landed (its answer was lost to a timeout), and this
    -- upload is that scan again: this list's last admission is this key's, at the same scan
    -- time. Another gate's scan at the same time is another holder: a conflict.
    local last = redis.call('HGET', ticket, 'last:' .. list_id) or ''
    local dir, who, at = string.match(last, '^(%a+)|%d+|([^|]*)|%d|[^|]*|%d|%d|(%d*)$')
    if dir == 'entry' and who == actor and at == scanned_at then
      reason, uploaded = '', true
    end
  end
else
  if not ticket then
    reason = 'wrong_event'
  elseif not t[1] then
    reason = 'unknown_ticket'
  elseif redis.call('HGET', ticket, 'in:' .. list_id) ~= '1' then
    reason = 'not_inside'
  else
    redis.call('HSET', ticket, 'in:' .. list_id, '0')
    redis.call('HINCRBY', list, 'inside', -1)
    redis.call('HINCRBY', list, 'exits', 1)
  end
end

local e = 'checkin'
if uploaded then
  e = nil
elseif reason ~= '' and offline then
  e = 'checkin_conflict'
  redis.call('HINCRBY', list, 'conflicts', 1)
  redis.call('HINCRBY', list, 'c:' .. reason, 1)
  redis.call('HINCRBY', stats, 'conflicts', 1)
elseif reason ~= '' then
  e = 'checkin_refused'
  redis.call('HINCRBY', list, 'r:' .. reason, 1)
  redis.call('HINCRBY', stats, 'refused', 1)
elseif ticket then
  redis.call('HSET', ticket, 'last:' .. list_id,
    table.concat({direction, now_us, actor, undo[1], undo[2], undo[3], undo[4], scanned_at}, '|'))
end
if e then
  local entry = {'t', ticket_id, 'e', e, 'ts', now_us, 'a', actor, 'r', request_id, 'ip', client_ip,
    'l', list_id, 'd', direction}
  if reason ~= '' then entry[#entry + 1], entry[#entry + 2] = 'why', reason end
  if scanned_at ~= '' then entry[#entry + 1], entry[#entry + 2] = 'at', scanned_at end
  if offline then entry[#entry + 1], entry[#entry + 2] = 'off', '1' end
  redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, '*', unpack(entry))
else
  redis.call('HINCRBY', stats, 'replayed', 1)  -- a write, for the WAIT after the script
end

local out = {reason == '' and 1 or 0, reason, redis.call('HGET', list, 'inside'), used_at, used_list}
if ticket then t = redis.call('HMGET', ticket, unpack(FIELDS)) end
for i = 1, #FIELDS do out[#out + 1] = t[i] or '' end
local stored = {}
for i = 1, #out do stored[i] = tostring(out[i]) end
redis.call('SET', record, table.concat(stored, SEP), 'EX', ttl_s)
return out
