-- Change a webhook: roll its secret (the old one still signs until the grace period ends),
-- disable it (an endpoint's 410, or retries run out), enable it again, or delete it; and move
-- the webhooks' generation on, so that the tickets processor loads them again.
-- Must change together: store/webhooks.py (KEYS, ARGV), webhook.lua (the hash's fields).
--
-- KEYS[1]  webhook     the webhook's hash         wh:{webhooks}:<id>
-- KEYS[2]  index       every webhook's id         whs:{webhooks}
-- KEYS[3]  generation  moved on at every change   whgen:{webhooks}
-- ARGV[1]  webhook_id
-- ARGV[2]  action      'roll', 'disable', 'enable' or 'delete'
-- ARGV[3]  value       the new secret (roll), why (disable), else ''
-- ARGV[4]  grace_us    how long the old secret still signs after a roll
-- Returns  {'ok', at_us} or {'missing'}

local webhook, action, value = KEYS[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', webhook) == 0 then return {'missing'} end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if action == 'roll' then
  redis.call('HSET', webhook, 's0', redis.call('HGET', webhook, 's'), 's0u', now_us + tonumber(ARGV[4]),
    's', value, 'r', now_us)
elseif action == 'disable' then
  redis.call('HSET', webhook, 'st', 'disabled', 'why', value)
elseif action == 'enable' then
  redis.call('HSET', webhook, 'st', 'active', 'why', '')
else
  redis.call('DEL', webhook)
  redis.call('SREM', KEYS[2], ARGV[1])
end
redis.call('INCR', KEYS[3])
return {'ok', now_us}
