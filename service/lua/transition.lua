-- Move a ticket to a target state as one compare-and-set, and store the answer in a replay
-- record: keyed by the request id (a load balancer re-sending the request to another
-- replica) or by the caller's Idempotency-Key. The same record again gets the first answer,
-- so the gate that won never gets a false 409.
--
-- KEYS[1]  ticket hash       ticket:{<shard>}:<id>
-- KEYS[2]  replay record     replay:{<shard>}:<id>:<request id>  or  idem:{<shard>}:<hash>
-- ARGV[1]  target value of the ticket's `valid` field: '1' validate, '0' invalidate
-- ARGV[2]  record ttl_s
-- ARGV[3]  fingerprint of the request: 'invalidate' or 'validate'
-- Returns  {outcome, timestamp, valid, replayed}
--          outcome: 'ok' (state changed), 'conflict' (already in the target state),
--                   'missing' (no such ticket; nothing stored),
--                   'mismatch' (the record belongs to another request; nothing changed)
--          timestamp, valid: the ticket as it was answered ('' when missing or mismatch)
--          replayed: 1 when the answer comes from the record, else 0
local prior = redis.call('GET', KEYS[2])
if prior then
  local fp, outcome, ts, valid = string.match(prior, '^([^|]*)|(%a+)|([^|]*)|(%d)$')
  if fp ~= ARGV[3] then
    return {'mismatch', '', '', 1}
  end
  return {outcome, ts, valid, 1}
end
local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid')
if not cur[1] then
  return {'missing', '', '', 0}
end
local outcome = 'conflict'
if cur[2] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'valid', ARGV[1])
  outcome = 'ok'
end
redis.call('SET', KEYS[2], table.concat({ARGV[3], outcome, cur[1], ARGV[1]}, '|'), 'EX', ARGV[2])
return {outcome, cur[1], ARGV[1], 0}
