-- Move a ticket to a target state as one compare-and-set, and remember the answer under
-- the request id, so that a replay of the same request (a load balancer re-sending it to
-- another replica, or a client library retrying) gets the first answer, never a false 409.
--
-- KEYS[1]  ticket hash       ticket:{<shard>}:<id>
-- KEYS[2]  replay record     replay:{<shard>}:<id>:<request id>
-- ARGV[1]  target value of the ticket's `valid` field: '1' validate, '0' invalidate
-- ARGV[2]  replay_ttl_s: how long the replay record lives
-- Returns  {outcome, timestamp, valid, replayed}
--          outcome: 'ok' (state changed), 'conflict' (already in the target state),
--                   'missing' (no such ticket; nothing stored)
--          timestamp, valid: the ticket as it was answered ('' when missing)
--          replayed: 1 when the answer is the stored first answer, else 0
local prior = redis.call('GET', KEYS[2])
if prior then
  local outcome, ts, valid = string.match(prior, '^(%a+)|([^|]*)|(%d)$')
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
redis.call('SET', KEYS[2], outcome .. '|' .. cur[1] .. '|' .. ARGV[1], 'EX', ARGV[2])
return {outcome, cur[1], ARGV[1], 0}
