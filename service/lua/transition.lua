-- Move a ticket to a target state as one compare-and-set; count it and append its event (a
-- refused attempt too: repeated scans of a used ticket are what fraud checks look for); and
-- store the answer in a replay record, keyed by the caller and the request id (a load
-- balancer re-sending the request to another replica) or by the caller's Idempotency-Key.
-- The same record again gets the first answer, with no second change and no second event,
-- so the gate that won never gets a false 409.
--
-- KEYS[1]  ticket hash                 tkt:{<shard>}:<id>
-- KEYS[2]  replay record               replay:{<shard>}:<id>:<hash>  or  idem:{<shard>}:<hash>:answer
-- KEYS[3]  counters of the shard       stats:{<shard>}
-- KEYS[4]  event stream of the shard   events:{<shard>}
-- ARGV[1]  target         the ticket's `valid` field after: '1' validate, '0' invalidate
-- ARGV[2]  ttl_s          of the replay record
-- ARGV[3]  transition     'invalidate' or 'validate'; also the record's fingerprint
-- ARGV[4]  actor          API key name
-- ARGV[5]  request_id
-- ARGV[6]  client_ip
-- ARGV[7]  events_maxlen  approximate cap of the stream
-- ARGV[8]  ticket_id
-- Returns  {outcome, timestamp, valid, replayed}
--          outcome: 'ok' (state changed), 'conflict' (already in the target state),
--                   'missing' (no such ticket; nothing stored),
--                   'mismatch' (the record belongs to another request; nothing changed)
--          timestamp, valid: the ticket as it was answered ('' when missing or mismatch)
--          replayed: 1 when the answer comes from the record, else 0
local target, ttl_s, transition = ARGV[1], ARGV[2], ARGV[3]
local actor, request_id, client_ip, events_maxlen, ticket_id = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local prior = redis.call('GET', KEYS[2])
if prior then
  local fp, outcome, ts, valid = string.match(prior, '^([^|]*)|(%a+)|([^|]*)|(%d)$')
  if fp ~= transition then
    return {'mismatch', '', '', 1}
  end
  return {outcome, ts, valid, 1}
end
local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid')
if not cur[1] then
  return {'missing', '', '', 0}
end
local outcome, event = 'conflict', transition .. '_refused'
if cur[2] ~= target then
  redis.call('HSET', KEYS[1], 'valid', target)
  outcome, event = 'ok', transition .. 'd'
  local from, to = 'valid', 'invalid'
  if target == '1' then from, to = 'invalid', 'valid' end
  redis.call('HINCRBY', KEYS[3], from, -1)
  redis.call('HINCRBY', KEYS[3], to, 1)
else
  redis.call('HINCRBY', KEYS[3], 'refused', 1)
end
local now = redis.call('TIME')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', events_maxlen, '*',
  't', ticket_id, 'e', event,
  'ts', now[1] .. string.format('%06d', tonumber(now[2])),
  'a', actor, 'r', request_id, 'ip', client_ip)
redis.call('SET', KEYS[2], table.concat({transition, outcome, cur[1], target}, '|'), 'EX', ttl_s)
return {outcome, cur[1], target, 0}
