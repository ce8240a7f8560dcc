-- Create an event: its hash and its place in its shard's event index, in one step.
--
-- KEYS[1]  the event's hash             evt:{<shard>}:<event id>
-- KEYS[2]  event index of the shard     evts:{<shard>}
-- ARGV[1]  event_id
-- ARGV[2]  name
-- ARGV[3]  starts_at   integer microseconds, '' for none
-- ARGV[4]  ends_at     integer microseconds, '' for none
-- ARGV[5]  capacity    tickets it may issue, '' for no limit
-- Returns  1 when created, 0 when an event with that id exists (nothing changed)
local event_id, name, starts_at, ends_at, capacity = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'name', name, 'starts_at', starts_at, 'ends_at', ends_at,
  'capacity', capacity, 'issued', 0)
redis.call('SADD', KEYS[2], event_id)
return 1
