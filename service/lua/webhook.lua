-- Register a webhook: its hash (url, types, event, description, state, secret), its place in
-- the index, and the generation that tells the tickets processor to load the webhooks again.
-- A webhook made under a request mark (the caller and request id its id derives from) is
-- that request's: the same request again gets it back, not a second webhook.
-- Must change together: store/webhooks.py (KEYS, ARGV, the hash's fields), webhook_state.lua.
--
-- Webhook hash fields: u (url), ty (types, comma-separated, '' for all), ev (event, '' for
-- any), d (description), st ('active', 'disabled'), why (why disabled), c (created, µs),
-- s (secret), s0 (the secret before the last roll), s0u (until when it still signs, µs),
-- r (last rolled, µs), m (the request mark).
--
-- KEYS[1]  webhook     the webhook's hash         wh:{webhooks}:<id>
-- KEYS[2]  index       every webhook's id         whs:{webhooks}
-- KEYS[3]  generation  moved on at every change   whgen:{webhooks}
-- ARGV[1]  webhook_id
-- ARGV[2]  url
-- ARGV[3]  types       comma-separated, '' for every type
-- ARGV[4]  event       '' for every event
-- ARGV[5]  description
-- ARGV[6]  secret      its signing secret (whsec_...)
-- ARGV[7]  mark        the request's mark, '' for none (a random id)
-- Returns  {'created', created_us}, {'replayed', created_us} (the same request's), or
--          {'taken'} (another webhook has this id; nothing changed)

local webhook, mark = KEYS[1], ARGV[7]
local existing = redis.call('HMGET', webhook, 'm', 'c')
if existing[2] then
  if mark ~= '' and existing[1] == mark then return {'replayed', tonumber(existing[2])} end
  return {'taken'}
end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('HSET', webhook, 'u', ARGV[2], 'ty', ARGV[3], 'ev', ARGV[4], 'd', ARGV[5], 'st', 'active',
  'c', now_us, 's', ARGV[6], 'm', mark)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return {'created', now_us}
