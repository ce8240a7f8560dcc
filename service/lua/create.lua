-- Create a ticket, valid, stamped with the Redis server's clock, with its optional fields;
-- index its id, count it (in its shard, and in its event when it has one), and append a
-- `created` change, all in one step. An event with a capacity issues exactly that many: the
-- count and the ticket are decided here together. Creating an id that already exists
-- changes nothing and returns the stored ticket as a replay: the same call again (a
-- Redis-client retry with the same id, or nginx re-sending a request whose id derives from
-- its request id) gets its ticket back, with no second ticket and no second change. With an
-- Idempotency-Key's claim, the first answer is stored in it, and a later call with the same
-- claim gets it back; a claim made by another request is refused.
-- A replayed answer counts in the shard's `replayed`: a write, so that the WAIT after the
-- script (with replicas) covers the first answer's own write too.
--
-- KEYS[1]  ticket  ticket hash                 t:{<shard>}:<id>
-- KEYS[2]  index  id index of the shard       tickets:{<shard>}
-- KEYS[3]  stats  counters of the shard       stats:{<shard>}
-- KEYS[4]  stream  change stream of the shard   events:{<shard>}
-- KEYS[..]  optional  optional, at the positions ARGV[8] and ARGV[9] give:
--          the Idempotency-Key's claim  idem:{<shard>}:<hash>  (see claim.lua)
--          the event's hash             evt:{<shard>}:<event id>
-- ARGV[1]  ticket_id
-- ARGV[2]  actor          API key name
-- ARGV[3]  request_id
-- ARGV[4]  client_ip
-- ARGV[5]  events_maxlen  approximate cap of the stream
-- ARGV[6]  fingerprint    of the request (with a claim; no '|')
-- ARGV[7]  ttl_s          of the claim
-- ARGV[8]  claim_at       position of the claim in KEYS, 0 for none
-- ARGV[9]  event_at       position of the event's hash in KEYS, 0 for the default event
-- ARGV[10..]  fields  the ticket's optional fields as name, value pairs: ty (type), h (holder),
--          st (seat), vf and vu (valid from and until, integer microseconds); '' for none
-- Returns  {outcome, id, replayed, ts, valid, ty, h, st, vf, vu}
--          outcome: 'created'; 'mismatch' (the claim belongs to another request),
--          'no_event' (no such event) or 'sold_out' (the event's capacity is issued), with
--          nothing changed; ts: microseconds since the epoch as an integer string;
--          valid: '1' (valid), '0' (used) or 'r' (revoked); replayed: 1 for a stored answer
local ticket_id, actor, request_id, client_ip, events_maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local fingerprint, ttl_s = ARGV[6], ARGV[7]
local claim_at, event_at = tonumber(ARGV[8]), tonumber(ARGV[9])
local claim = claim_at > 0 and KEYS[claim_at] or nil
local event = event_at > 0 and KEYS[event_at] or nil
local SEP = '\31'
local FIELDS = {'ts', 'valid', 'ty', 'h', 'st', 'vf', 'vu'}

local function answer(outcome, id, replayed, values)
  local out = {outcome, id, replayed}
  for i = 1, #FIELDS do out[#out + 1] = values[i] or '' end
  return out
end

if claim then
  local prior = redis.call('GET', claim)
  if prior then
    local fp, rest = string.match(prior, '^([^|]*)|(.*)$')
    if fp ~= fingerprint then
      return answer('mismatch', '', 1, {})
    end
    local parts = {}
    for part in string.gmatch(rest .. SEP, '([^' .. SEP .. ']*)' .. SEP) do parts[#parts + 1] = part end
    redis.call('HINCRBY', KEYS[3], 'replayed', 1)
    return answer(parts[1], parts[2], 1, {unpack(parts, 3)})
  end
end

local replayed = 1
if redis.call('EXISTS', KEYS[1]) == 0 then
  replayed = 0
  if event then
    local ev = redis.call('HMGET', event, 'name', 'capacity', 'issued')
    if not ev[1] then
      return answer('no_event', '', 0, {})
    end
    if ev[2] and ev[2] ~= '' and tonumber(ev[3] or '0') >= tonumber(ev[2]) then
      return answer('sold_out', '', 0, {})
    end
    redis.call('HINCRBY', event, 'issued', 1)
  end
  local now = redis.call('TIME')
  -- Microseconds as an integer: Redis stores an integer-looking value in 9 bytes, not 17.
  local ts = now[1] .. string.format('%06d', tonumber(now[2]))
  local fields = {'ts', ts, 'valid', '1'}
  for i = 10, #ARGV, 2 do
    if ARGV[i + 1] ~= '' then
      fields[#fields + 1], fields[#fields + 2] = ARGV[i], ARGV[i + 1]
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('SADD', KEYS[2], ticket_id)
  redis.call('HINCRBY', KEYS[3], 'total', 1)
  redis.call('HINCRBY', KEYS[3], 'valid', 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', events_maxlen, '*',
    't', ticket_id, 'e', 'created', 'ts', ts, 'a', actor, 'r', request_id, 'ip', client_ip)
end
if replayed == 1 then
  redis.call('HINCRBY', KEYS[3], 'replayed', 1)
end
local values = redis.call('HMGET', KEYS[1], unpack(FIELDS))
if claim then
  local parts = {'created', ticket_id}
  for i = 1, #FIELDS do parts[#parts + 1] = values[i] or '' end
  redis.call('SET', claim, fingerprint .. '|' .. table.concat(parts, SEP), 'EX', ttl_s)
end
return answer('created', ticket_id, replayed, values)
