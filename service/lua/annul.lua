-- Undo a caller's own last admitted scan of a ticket on a list, within the annul window:
-- the turnstile did not turn. Everything that scan did is put back (occupancy, counters, the
-- areas it checked the holder out of, the ticket's first admission and its `valid`), and an
-- change records the annulment. Only the last scan, only once, only by the key that made it.
--
-- Invariants kept (docs/checkin.md#check-in-invariants; checkin.lua keeps the same ones):
--   * only the ticket's latest admitted scan on any list is undone: a later one (an exit, an
--     entry elsewhere that left this area) was decided on this one's outcome, so undoing this
--     one alone would leave counts that no sequence of scans gives ('superseded');
--   * an annul undoes only what still holds: a ticket revoked since stays revoked, a `valid`
--     that staff set again is left;
--   * 0 <= inside <= capacity: putting a holder back into an area that is full since is
--     refused ('area_full'), as an entry would be.
-- Must change together: checkin.lua (the last:<list> record it writes), store/checkin.py
-- (annul's KEYS and outcomes), tests/test_model.py (the reference model of an annul).
--
-- KEYS[1]  list  the list's hash            lst:{<shard>}:<list id>
-- KEYS[2]  stats  counters of the shard      stats:{<shard>}
-- KEYS[3]  stream  change stream of the shard  events:{<shard>}
-- KEYS[4]  ticket  the ticket's hash          t:{<shard>}:<id>
-- KEYS[5..]  left  the hashes of the lists this list leaves, in the order of ARGV[8..]
-- ARGV[1]  list_id
-- ARGV[2]  actor          API key name: only its own scan can be annulled
-- ARGV[3]  window_us      how long after the scan it may be annulled, microseconds
-- ARGV[4]  request_id
-- ARGV[5]  client_ip
-- ARGV[6]  events_maxlen  approximate cap of the stream
-- ARGV[7]  ticket_id
-- ARGV[8..]  left  the ids of the lists this list leaves, in its `leaves` order
-- Returns  {outcome, inside}: outcome 'annulled', or 'nothing' (no scan of this caller's to
--          undo on this list: none, another key's, or already annulled), 'too_late',
--          'superseded' (the ticket was scanned again since) or 'area_full' (the area the
--          holder would be put back into is full)
local list_id, actor, window_us = ARGV[1], ARGV[2], tonumber(ARGV[3])
local request_id, client_ip, events_maxlen, ticket_id = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local list, stats, stream, ticket = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local last = redis.call('HGET', ticket, 'last:' .. list_id)
local inside = redis.call('HGET', list, 'inside') or '0'
if not last then
  return {'nothing', inside}
end
local dir, at, who, flipped, left, first, u1 = string.match(last, '^(%a+)|(%d+)|([^|]*)|(%d)|([^|]*)|(%d)|(%d)|?%d*$')
if who ~= actor then
  return {'nothing', inside}
end
local now = redis.call('TIME')
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
if tonumber(now_us) - tonumber(at) > window_us then
  return {'too_late', inside}
end
local state = redis.call('HGETALL', ticket)
local field = {}
for i = 1, #state, 2 do field[state[i]] = state[i + 1] end
for name, value in pairs(field) do
  if name ~= 'last:' .. list_id and string.sub(name, 1, 5) == 'last:' then
    local other_at = string.match(value, '^%a+|(%d+)|')
    if other_at and tonumber(other_at) >= tonumber(at) then return {'superseded', inside} end
  end
end

local function full(key)
  local cap = redis.call('HMGET', key, 'capacity', 'inside')
  return cap[1] and cap[1] ~= '' and tonumber(cap[2] or '0') >= tonumber(cap[1])
end

-- The lists this scan checked the holder out of, with their KEYS: each must have room again.
local back = {}
for other in string.gmatch(left, '[^,]+') do
  for i = 8, #ARGV do
    if ARGV[i] == other and field['in:' .. other] ~= '1' then back[#back + 1] = {other, KEYS[i - 3]} end
  end
end

if dir == 'entry' then
  if field['in:' .. list_id] ~= '1' then return {'superseded', inside} end
  for _, each in ipairs(back) do
    if full(each[2]) then return {'area_full', inside} end
  end
  redis.call('HSET', ticket, 'in:' .. list_id, '0')
  redis.call('HINCRBY', list, 'inside', -1)
  redis.call('HINCRBY', list, 'admitted', -1)
  if first == '1' then redis.call('HDEL', ticket, 'a:' .. list_id) end
  if u1 == '1' then redis.call('HDEL', ticket, 'u1') end
  if flipped == '1' and field['valid'] == '0' then  -- not if revoked or validated since
    redis.call('HSET', ticket, 'valid', '1')
    redis.call('HINCRBY', stats, 'valid', 1)
    redis.call('HINCRBY', stats, 'invalid', -1)
  end
  for _, each in ipairs(back) do
    redis.call('HSET', ticket, 'in:' .. each[1], '1')
    redis.call('HINCRBY', each[2], 'inside', 1)
    redis.call('HINCRBY', each[2], 'exits', -1)
  end
else
  if field['in:' .. list_id] == '1' then return {'superseded', inside} end
  if full(list) then return {'area_full', inside} end
  redis.call('HSET', ticket, 'in:' .. list_id, '1')
  redis.call('HINCRBY', list, 'inside', 1)
  redis.call('HINCRBY', list, 'exits', -1)
end
redis.call('HDEL', ticket, 'last:' .. list_id)
redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, '*', 't', ticket_id, 'e', 'checkin_annulled',
  'ts', now_us, 'a', actor, 'r', request_id, 'ip', client_ip, 'l', list_id, 'd', dir)
return {'annulled', redis.call('HGET', list, 'inside')}
