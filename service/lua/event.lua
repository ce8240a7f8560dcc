-- Create an event: its hash and its place in its shard's event index, in one step. An
-- event made under a request mark (the caller and request id it was derived from) is that
-- request's: the same request again gets it back (a retry after a 503), with nothing made
-- twice; the replay writes its `replayed` count, so that a WAIT after it covers the first.
--
-- KEYS[1]  event  the event's hash             evt:{<shard>}:<event id>
-- KEYS[2]  event_index  event index of the shard     evts:{<shard>}
-- ARGV[1]  event_id
-- ARGV[2]  name
-- ARGV[3]  starts_at   integer microseconds, '' for none
-- ARGV[4]  ends_at     integer microseconds, '' for none
-- ARGV[5]  capacity    tickets it may issue, '' for no limit
-- ARGV[6]  mark        the request's mark, '' for none (a random id)
-- Returns  1 when created, 2 when this request made it before (nothing changed), 0 when
--          another made an event with that id (nothing changed)
local event_id, name, starts_at, ends_at, capacity, mark = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 1 then
  if mark ~= '' and redis.call('HGET', KEYS[1], 'rq') == mark then
    redis.call('HINCRBY', KEYS[1], 'replayed', 1)
    return 2
  end
  return 0
end
redis.call('HSET', KEYS[1], 'name', name, 'starts_at', starts_at, 'ends_at', ends_at,
  'capacity', capacity, 'issued', 0)
if mark ~= '' then
  redis.call('HSET', KEYS[1], 'rq', mark)
end
redis.call('SADD', KEYS[2], event_id)
return 1
