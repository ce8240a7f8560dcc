-- Create a check-in list (a gate, or an area) of an event, in one step: its hash and its
-- place in the event's list index. Every list it `leaves` must be a list of the same event.
-- A list made under a request mark is that request's: the same request again gets it back
-- (see event.lua).
--
-- KEYS[1]  event  the event's hash              evt:{<shard>}:<event id>
-- KEYS[2]  list  the new list's hash           lst:{<shard>}:<list id>
-- KEYS[3]  list_index  the event's list index        lsts:{<shard>}:<event id>
-- KEYS[4..]  left  the hashes of the lists it leaves, in the order of ARGV[8..]
-- ARGV[1]  list_id
-- ARGV[2]  name
-- ARGV[3]  types      the ticket types it admits, comma-separated; '' for all
-- ARGV[4]  reentry    '1' when an exit lets the holder in again, else '0' (single entry)
-- ARGV[5]  capacity   how many may be inside at once; '' for no limit
-- ARGV[6]  leaves     the list ids it checks the holder out of, comma-separated ('' none)
-- ARGV[7]  mark       the request's mark, '' for none (a random id)
-- ARGV[8..]  left  the same list ids, one each
-- Returns  'created', 'replayed' (this request made it before), 'no_event', 'exists' (that
--          list id is another's) or 'no_list:<id>' (a list it leaves is not a list of the
--          event); nothing changes unless 'created'
local list_id, name, types, reentry, capacity, leaves = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local mark = ARGV[7]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'no_event'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if mark ~= '' and redis.call('HGET', KEYS[2], 'rq') == mark then
    redis.call('HINCRBY', KEYS[2], 'replayed', 1)
    return 'replayed'
  end
  return 'exists'
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    return 'no_list:' .. ARGV[i + 4]
  end
end
redis.call('HSET', KEYS[2], 'name', name, 'types', types, 'reentry', reentry, 'capacity', capacity,
  'leaves', leaves, 'inside', 0, 'admitted', 0, 'exits', 0)
if mark ~= '' then
  redis.call('HSET', KEYS[2], 'rq', mark)
end
redis.call('SADD', KEYS[3], list_id)
return 'created'
