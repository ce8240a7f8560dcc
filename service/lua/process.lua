-- The tickets processor's step for a batch of one shard's stream entries: record each in its
-- ticket's history and count it, then acknowledge them all. A history is keyed by entry id,
-- so an entry delivered twice (a crash before the ack, a claim from a dead consumer) is
-- recorded and counted once.
--
-- KEYS[1]  processor counters of the shard   processed:{<shard>}  (field: event type)
-- KEYS[2]  event stream of the shard         events:{<shard>}
-- KEYS[3..n]  the history of each entry's ticket   history:{<shard>}:<id>, one per entry
-- ARGV[1]  group   the consumer group
-- ARGV[2..] per entry, in the order of KEYS[3..n]: entry id, event type, event as JSON
-- Returns  how many entries were counted now (the rest had been already)
local group = ARGV[1]
local new, ids = 0, {}
for i = 3, #KEYS do
  local a = 2 + (i - 3) * 3
  ids[#ids + 1] = ARGV[a]
  if redis.call('HSETNX', KEYS[i], ARGV[a], ARGV[a + 2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[a + 1], 1)
    new = new + 1
  end
end
if #ids > 0 then
  redis.call('XACK', KEYS[2], group, unpack(ids))
end
return new
