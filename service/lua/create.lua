-- Create a ticket, valid, stamped with the Redis server's clock, and index its id.
-- Creating an id that already exists changes nothing and returns the stored ticket, so a
-- client-library retry of the same call (same id) is harmless. With an idempotency record,
-- the first answer is stored, and a later call with the same record gets it back.
--
-- KEYS[1]  ticket hash                      ticket:{<shard>}:<id>
-- KEYS[2]  id index of the shard            tickets:{<shard>}
-- KEYS[3]  optional idempotency record      idem:{<shard>}:<hash of caller and key>
-- ARGV[1]  ticket id
-- ARGV[2]  fingerprint of the request (with KEYS[3]): 'create'
-- ARGV[3]  record ttl_s (with KEYS[3])
-- Returns  {outcome, id, timestamp, valid, replayed}
--          outcome: 'created', or 'mismatch' when the record belongs to another request
--          timestamp: seconds since the epoch, as a decimal string; valid: '1' or '0'
--          replayed: 1 when the answer is the stored first answer, else 0
if KEYS[3] then
  local prior = redis.call('GET', KEYS[3])
  if prior then
    local fp, outcome, id, ts, valid = string.match(prior, '^([^|]*)|(%a+)|([^|]*)|([^|]*)|(%d)$')
    if fp ~= ARGV[2] then
      return {'mismatch', '', '', '', 1}
    end
    return {outcome, id, ts, valid, 1}
  end
end
local now = redis.call('TIME')
local ts = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local valid = '1'
if redis.call('HSETNX', KEYS[1], 'ts', ts) == 1 then
  redis.call('HSET', KEYS[1], 'valid', valid)
  redis.call('SADD', KEYS[2], ARGV[1])
else
  local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid')
  ts, valid = cur[1], cur[2]
end
if KEYS[3] then
  redis.call('SET', KEYS[3], table.concat({ARGV[2], 'created', ARGV[1], ts, valid}, '|'), 'EX', ARGV[3])
end
return {'created', ARGV[1], ts, valid, 0}
