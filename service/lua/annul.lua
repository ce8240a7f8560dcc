-- Undo a caller's own last admitted scan of a ticket on a list, within the annul window:
-- the turnstile did not turn. Everything that scan did is put back (occupancy, counters, the
-- areas it checked the holder out of, the ticket's first admission and its `valid`), and an
-- event records the annulment. Only the last scan, only once, only by the key that made it.
--
-- KEYS[1]  the list's hash            lst:{<shard>}:<list id>
-- KEYS[2]  counters of the shard      stats:{<shard>}
-- KEYS[3]  event stream of the shard  events:{<shard>}
-- KEYS[4]  the ticket's hash          t:{<shard>}:<id>
-- KEYS[5..] the hashes of the lists this list leaves, in the order of ARGV[8..]
-- ARGV[1]  list_id
-- ARGV[2]  actor          API key name: only its own scan can be annulled
-- ARGV[3]  window_us      how long after the scan it may be annulled, microseconds
-- ARGV[4]  request_id
-- ARGV[5]  client_ip
-- ARGV[6]  events_maxlen  approximate cap of the stream
-- ARGV[7]  ticket_id
-- ARGV[8..] the ids of the lists this list leaves, in its `leaves` order
-- Returns  {outcome, inside}: outcome 'annulled', or 'nothing' (no scan of this caller's to
--          undo on this list: none, another key's, or already annulled) or 'too_late'
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
if dir == 'entry' then
  redis.call('HSET', ticket, 'in:' .. list_id, '0')
  redis.call('HINCRBY', list, 'inside', -1)
  redis.call('HINCRBY', list, 'admitted', -1)
  if first == '1' then redis.call('HDEL', ticket, 'a:' .. list_id) end
  if u1 == '1' then redis.call('HDEL', ticket, 'u1') end
  if flipped == '1' then
    redis.call('HSET', ticket, 'valid', '1')
    redis.call('HINCRBY', stats, 'valid', 1)
    redis.call('HINCRBY', stats, 'invalid', -1)
  end
  for other in string.gmatch(left, '[^,]+') do
    for i = 8, #ARGV do
      if ARGV[i] == other then
        redis.call('HSET', ticket, 'in:' .. other, '1')
        redis.call('HINCRBY', KEYS[i - 3], 'inside', 1)
        redis.call('HINCRBY', KEYS[i - 3], 'exits', -1)
      end
    end
  end
else
  redis.call('HSET', ticket, 'in:' .. list_id, '1')
  redis.call('HINCRBY', list, 'inside', 1)
  redis.call('HINCRBY', list, 'exits', -1)
end
redis.call('HDEL', ticket, 'last:' .. list_id)
redis.call('XADD', stream, 'MAXLEN', '~', events_maxlen, '*', 't', ticket_id, 'e', 'checkin_annulled',
  'ts', now_us, 'a', actor, 'r', request_id, 'ip', client_ip, 'l', list_id, 'd', dir)
return {'annulled', redis.call('HGET', list, 'inside')}
