-- Create a ticket, valid, stamped with the Redis server's clock, and index its id.
-- Creating an id that already exists changes nothing and returns the stored ticket, so
-- a client-side retry of the same call (same id) is harmless.
--
-- KEYS[1]  ticket hash             ticket:{<shard>}:<id>
-- KEYS[2]  id index of the shard   tickets:{<shard>}
-- ARGV[1]  ticket id
-- Returns  {created, timestamp, valid}
--          created: 1 when this call made the ticket, 0 when it already existed
--          timestamp: seconds since the epoch, as a decimal string
--          valid: '1' or '0'
local now = redis.call('TIME')
local ts = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
if redis.call('HSETNX', KEYS[1], 'ts', ts) == 1 then
  redis.call('HSET', KEYS[1], 'valid', '1')
  redis.call('SADD', KEYS[2], ARGV[1])
  return {1, ts, '1'}
end
local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid')
return {0, cur[1], cur[2]}
