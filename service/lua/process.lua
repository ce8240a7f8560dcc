-- The tickets processor's step for one stream entry: record it in the ticket's history and
-- count it, then acknowledge it. The history is keyed by entry id, so an entry delivered
-- twice (a crash before the ack, a claim from a dead consumer) is recorded and counted once.
--
-- KEYS[1]  history of the ticket       history:{<shard>}:<id>
-- KEYS[2]  processor counters          processed:{<shard>}  (field: event type)
-- KEYS[3]  event stream of the shard   events:{<shard>}
-- ARGV[1]  consumer group   ARGV[2]  entry id   ARGV[3]  event type   ARGV[4]  event as JSON
-- Returns  1 when the entry was counted now, 0 when it had been already
local new = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[4])
if new == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return new
