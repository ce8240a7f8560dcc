-- Send a delivery again at once, whatever became of it (an operator's retry): pending again,
-- due now, its attempts and log kept.
-- Must change together: store/webhooks.py (KEYS, ARGV), deliver_settle.lua.
--
-- KEYS[1]  queue    its pending deliveries, by when next due (ms)   whq:{wh-<id>}
-- KEYS[2]  records  delivery id -> record (JSON)                   whd:{wh-<id>}
-- ARGV[1]  delivery_id
-- Returns  {'ok'} or {'missing'}

local queue, records, id = KEYS[1], KEYS[2], ARGV[1]
local raw = redis.call('HGET', records, id)
if not raw then return {'missing'} end
local record = cjson.decode(raw)
local now = redis.call('TIME')
record.state = 'pending'
record.next_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', records, id, cjson.encode(record))
redis.call('ZADD', queue, record.next_ms, id)
return {'ok'}
