-- Queue a webhook's deliveries of changes the tickets processor read, before it acknowledges
-- them: a delivery is keyed by its id, which derives from the webhook and the change, so a
-- change read again (a processor killed before its acknowledgement) queues nothing twice.
-- Each is due at once. Deliveries older than the log keeps are dropped, a hundred a call.
-- Must change together: store/webhooks.py (KEYS, ARGV), webhooks.Delivery (the record),
-- deliver_claim.lua, deliver_settle.lua.
--
-- KEYS[1]  queue    its pending deliveries, by when next due (ms)    whq:{wh-<id>}
-- KEYS[2]  records  delivery id -> record (JSON)                   whd:{wh-<id>}
-- KEYS[3]  log      delivery id, by when it was made (ms)           whl:{wh-<id>}
-- ARGV[1]  keep_ms  how long a delivery is kept after it was made
-- ARGV[2..]  deliveries  per delivery: its id, when its change was made (ms), its record
-- Returns  how many were queued now (the rest had been already)

local queue, records, log = KEYS[1], KEYS[2], KEYS[3]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local new = 0
for a = 2, #ARGV, 3 do
  local id = ARGV[a]
  if redis.call('HSETNX', records, id, ARGV[a + 2]) == 1 then
    redis.call('ZADD', queue, now_ms, id)
    redis.call('ZADD', log, tonumber(ARGV[a + 1]), id)
    new = new + 1
  end
end
local old = redis.call('ZRANGEBYSCORE', log, '-inf', now_ms - tonumber(ARGV[1]), 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('HDEL', records, unpack(old))
  redis.call('ZREM', queue, unpack(old))
  redis.call('ZREM', log, unpack(old))
end
return new
