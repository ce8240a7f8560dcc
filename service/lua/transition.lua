-- Move a ticket to a target state as one compare-and-set; count it and append its change (a
-- refused attempt too: repeated scans of a used ticket are what fraud checks look for); and
-- store the answer in a replay record, keyed by the caller and the request id (a load
-- balancer re-sending the request to another replica) or by the caller's Idempotency-Key.
-- The same record again gets the first answer, with nothing appended or counted again,
-- so the gate that won never gets a false 409.
-- A replayed answer counts in the shard's `replayed`: a write, so that the WAIT after the
-- script (with replicas) covers the first answer's own write too.
--
-- Invariants kept (docs/checkin.md#check-in-invariants; tests/test_model.py checks them): a revoked
-- ticket never changes state again; the shard's valid/invalid/revoked counters move with
-- every change; a plain invalidate marks the ticket (`p`) so that no single-entry list admits
-- it, and a validate clears the mark; an answer is replayed only to the request that earned it.
-- Must change together: checkin.lua (it reads `valid` and `p`), annul.lua (it restores
-- `valid` only while its own flip holds), tests/test_model.py.
--
-- KEYS[1]  ticket  ticket hash                 t:{<shard>}:<id>
-- KEYS[2]  record  replay record               replay:{<shard>}:<id>:<hash>  or  idem:{<shard>}:<hash>:answer
-- KEYS[3]  stats  counters of the shard       stats:{<shard>}
-- KEYS[4]  stream  change stream of the shard   events:{<shard>}
-- ARGV[1]  target         the ticket's `valid` field after: '1' validate, '0' invalidate,
--                         'r' revoke. A revoked ticket ('r') refuses every transition.
-- ARGV[2]  ttl_s          of the replay record
-- ARGV[3]  transition     'invalidate', 'validate' or 'revoke'; also the record's fingerprint
-- ARGV[4]  actor          API key name
-- ARGV[5]  request_id
-- ARGV[6]  client_ip
-- ARGV[7]  events_maxlen  approximate cap of the stream
-- ARGV[8]  ticket_id
-- ARGV[9]  reason         why, for the event (a revocation's), '' for none
-- Returns  {outcome, replayed, ts, valid, ty, h, st, vf, vu}
--          outcome: 'ok' (state changed), 'conflict' (already in the target state, or revoked),
--                   'missing' (no such ticket; nothing stored),
--                   'mismatch' (the record belongs to another request; nothing changed)
--          replayed: 1 when the answer comes from the record, else 0
--          ts, valid: the ticket as it was answered ('' when missing or mismatch);
--          ty, h, st, vf, vu: its fields that never change (see create.lua)
local target, ttl_s, transition = ARGV[1], ARGV[2], ARGV[3]
local actor, request_id, client_ip, events_maxlen, ticket_id = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local reason = ARGV[9] or ''
local cur = redis.call('HMGET', KEYS[1], 'ts', 'valid', 'ty', 'h', 'st', 'vf', 'vu')
local function answer(outcome, replayed, ts, valid)
  return {outcome, replayed, ts, valid, cur[3] or '', cur[4] or '', cur[5] or '', cur[6] or '', cur[7] or ''}
end
local prior = redis.call('GET', KEYS[2])
if prior then
  local fp, outcome, ts, valid = string.match(prior, '^([^|]*)|(%a+)|([^|]*)|([01r])$')
  if fp ~= transition then
    return answer('mismatch', 1, '', '')
  end
  redis.call('HINCRBY', KEYS[3], 'replayed', 1)
  return answer(outcome, 1, ts, valid)
end
if not cur[1] then
  return answer('missing', 0, '', '')
end
-- The shard's counter of each state.
local COUNTER = {['1'] = 'valid', ['0'] = 'invalid', r = 'revoked'}
local outcome, event, now_valid = 'conflict', transition .. '_refused', cur[2]
if cur[2] ~= target and cur[2] ~= 'r' then
  if transition == 'invalidate' then
    -- 'p': used by a plain scan, a single-entry scan without a list (checkin.lua refuses it
    -- at every single-entry list as already_used, whatever lists admitted it before).
    redis.call('HSET', KEYS[1], 'valid', target, 'p', '1')
  else
    redis.call('HSET', KEYS[1], 'valid', target)
    if transition == 'validate' then redis.call('HDEL', KEYS[1], 'p') end
  end
  outcome, event, now_valid = 'ok', transition .. 'd', target
  redis.call('HINCRBY', KEYS[3], COUNTER[cur[2]], -1)
  redis.call('HINCRBY', KEYS[3], COUNTER[target], 1)
else
  redis.call('HINCRBY', KEYS[3], 'refused', 1)
end
local now = redis.call('TIME')
local entry = {'t', ticket_id, 'e', event, 'ts', now[1] .. string.format('%06d', tonumber(now[2])),
  'a', actor, 'r', request_id, 'ip', client_ip}
if reason ~= '' then
  entry[#entry + 1], entry[#entry + 2] = 'why', reason
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', events_maxlen, '*', unpack(entry))
redis.call('SET', KEYS[2], table.concat({transition, outcome, cur[1], now_valid}, '|'), 'EX', ttl_s)
return answer(outcome, 0, cur[1], now_valid)
