-- Bind an Idempotency-Key to the request that first used it. The claim holds the
-- request's fingerprint, then (for a create, written by create.lua) '|' and its answer.
--
-- KEYS[1]  claim  the key's claim   idem:{<shard>}:<hash of caller and key>
-- ARGV[1]  fingerprint       of the request: operation, target and body, hashed (no '|')
-- ARGV[2]  ttl_s             how long the claim is kept
-- Returns  'new' (claimed now), 'same' (claimed before by this request), or 'mismatch'
--          (claimed before by another request; nothing changed)
local fingerprint, ttl_s = ARGV[1], ARGV[2]
local prior = redis.call('GET', KEYS[1])
if not prior then
  redis.call('SET', KEYS[1], fingerprint, 'EX', ttl_s)
  return 'new'
end
if string.match(prior, '^[^|]*') == fingerprint then
  return 'same'
end
return 'mismatch'
