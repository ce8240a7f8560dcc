-- Roll a device's key (a new one works at once, the old one never again) or revoke the device
-- for good, and move the devices' generation on: every replica drops its cached devices when
-- it sees the generation move (DEVICE_CACHE_CHECK_MS), so the old key is refused everywhere
-- within a second.
-- Must change together: store/devices.py (KEYS, ARGV), api/device_cache.py (the generation).
--
-- KEYS[1]  device      the device's hash          dev:{devices}:<device id>
-- KEYS[2]  generation  bumped at every roll and revocation   devgen:{devices}
-- ARGV[1]  action      'roll' or 'revoke'
-- ARGV[2]  key_digest  the new key's digest (a roll), '' for a revocation
-- Returns  {'rolled' or 'revoked', at_us}, or {'missing'}, {'revoked_already'}, or
--          {'pending'} (a roll of a device that has no key yet)

local device = KEYS[1]
local state = redis.call('HGET', device, 'st')
if not state then return {'missing'} end
if state == 'revoked' then return {'revoked_already'} end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if ARGV[1] == 'roll' then
  if state ~= 'active' then return {'pending'} end
  redis.call('HSET', device, 'kd', ARGV[2], 'r', now_us)
else
  redis.call('HSET', device, 'st', 'revoked', 'kd', '', 'x', now_us)
  redis.call('HDEL', device, 'ed', 'eu')
end
redis.call('INCR', KEYS[2])
return {ARGV[1] == 'roll' and 'rolled' or 'revoked', now_us}
