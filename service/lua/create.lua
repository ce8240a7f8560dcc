-- Create a ticket, valid, stamped with the Redis server's clock; index its id, count it, and
-- append a `created` event, all in one step. Creating an id that already exists changes
-- nothing and returns the stored ticket as a replay: the same call again (a Redis-client
-- retry with the same id, or nginx re-sending a request whose id derives from its request
-- id) gets its ticket back, with no second ticket and no second event. With an
-- Idempotency-Key's claim, the first answer is stored in it, and a later call with the same
-- claim gets it back; a claim made by another request is refused.
--
-- KEYS[1]  ticket hash                 tkt:{<shard>}:<id>
-- KEYS[2]  id index of the shard       tickets:{<shard>}
-- KEYS[3]  counters of the shard       stats:{<shard>}
-- KEYS[4]  event stream of the shard   events:{<shard>}
-- KEYS[5]  optional Idempotency-Key claim  idem:{<shard>}:<hash>  (see claim.lua)
-- ARGV[1]  ticket_id
-- ARGV[2]  actor          API key name
-- ARGV[3]  request_id
-- ARGV[4]  client_ip
-- ARGV[5]  events_maxlen  approximate cap of the stream
-- ARGV[6]  fingerprint    of the request (with KEYS[5]; no '|')
-- ARGV[7]  ttl_s          of the claim (with KEYS[5])
-- Returns  {outcome, id, timestamp, valid, replayed}
--          outcome: 'created', or 'mismatch' when the claim belongs to another request
--          timestamp: microseconds since the epoch, as an integer string; valid: '1' or '0'
--          replayed: 1 when the ticket already existed or the answer is the stored one, else 0
local ticket_id, actor, request_id, client_ip, events_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local fingerprint, ttl_s = ARGV[6], ARGV[7]
local claim = KEYS[5]
if claim then
  local prior = redis.call('GET', claim)
  if prior then
    local fp, outcome, id, ts, valid = string.match(prior, '^([^|]*)|(%a+)|([^|]*)|([^|]*)|(%d)$')
    if fp ~= fingerprint then
      return {'mismatch', '', '', '', 1}
    end
    return {outcome, id, ts, valid, 1}
  end
end
local now = redis.call('TIME')
-- Microseconds as an integer: Redis stores an integer-looking value in 9 bytes, not 17.
local ts = now[1] .. string.format('%06d', tonumber(now[2]))
local valid, replayed = '1', 0
if redis.call('HSETNX', KEYS[1], 'ts', ts) == 1 then
  redis.call('HSET', KEYS[1], 'valid', valid)
  redis.call('SADD', KEYS[2], ticket_id)
  redis.call('HINCRBY', KEYS[3], 'total', 1)
  redis.call('HINCRBY', KEYS[3], 'valid', 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', events_maxlen, '*',
    't', ticket_id, 'e', 'created', 'ts', ts, 'a', actor, 'r', request_id, 'ip', client_ip)
else
  local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid')
  ts, valid, replayed = cur[1], cur[2], 1
end
if claim then
  redis.call('SET', claim, table.concat({fingerprint, 'created', ticket_id, ts, valid}, '|'), 'EX', ttl_s)
end
return {'created', ticket_id, ts, valid, replayed}
