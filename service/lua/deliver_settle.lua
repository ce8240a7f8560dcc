-- Record an attempt of a delivery and what follows: delivered, given up, or due again after
-- a back-off. Its log keeps its first attempts and its last ones. A delivery settled
-- already (another processor took it after its lease ran out) is left as it is.
-- Must change together: store/webhooks.py (KEYS, ARGV), webhooks.Delivery (the record).
--
-- KEYS[1]  queue         its pending deliveries, by when next due (ms)   whq:{wh-<id>}
-- KEYS[2]  records       delivery id -> record (JSON); '~ok': the last delivery's time (ms)
--                        whd:{wh-<id>}
-- ARGV[1]  delivery_id
-- ARGV[2]  outcome       'delivered', 'failed' (given up) or 'retry'
-- ARGV[3]  retry_in_ms   for 'retry': how long until the next attempt
-- ARGV[4]  attempt       the attempt, as JSON (webhooks.Attempt)
-- ARGV[5]  log_attempts  how many attempts the log keeps
-- Returns  {'ok', state}, {'settled_already', state} or {'missing'}

local queue, records, id, outcome = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local raw = redis.call('HGET', records, id)
if not raw then
  redis.call('ZREM', queue, id)
  return {'missing'}
end
local record = cjson.decode(raw)
if record.state ~= 'pending' then return {'settled_already', record.state} end
local log = record.log
if type(log) ~= 'table' or log[1] == nil then log = {} end
local keep = tonumber(ARGV[5])
if #log >= keep then table.remove(log, math.floor(keep / 2) + 1) end
log[#log + 1] = cjson.decode(ARGV[4])
record.log = log
record.attempts = record.attempts + 1
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if outcome == 'retry' then
  record.next_ms = now_ms + tonumber(ARGV[3])
  redis.call('ZADD', queue, record.next_ms, id)
else
  record.state = outcome
  redis.call('ZREM', queue, id)
  if outcome == 'delivered' then redis.call('HSET', records, '~ok', now_ms) end
end
redis.call('HSET', records, id, cjson.encode(record))
return {'ok', record.state}
