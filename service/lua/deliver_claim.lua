-- Take a webhook's due deliveries for an attempt: each is leased (its due time moved past
-- the attempt's timeout), so that no other processor attempts it meanwhile, and comes due
-- again by itself if this processor dies before it settles it.
-- Must change together: store/webhooks.py (KEYS, ARGV), deliver_settle.lua.
--
-- KEYS[1]  queue     its pending deliveries, by when next due (ms)   whq:{wh-<id>}
-- KEYS[2]  records   delivery id -> record (JSON)                   whd:{wh-<id>}
-- ARGV[1]  limit     at most this many
-- ARGV[2]  lease_ms  how long a taken delivery is left to its attempt
-- Returns  {next_due_ms or '' (none pending), record...}

local queue, records = KEYS[1], KEYS[2]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', queue, '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {''}
for _, id in ipairs(due) do
  local record = redis.call('HGET', records, id)
  if record then
    redis.call('ZADD', queue, 'XX', now_ms + tonumber(ARGV[2]), id)
    out[#out + 1] = record
  else
    redis.call('ZREM', queue, id)
  end
end
local first = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #first > 0 then out[1] = first[2] end
return out
