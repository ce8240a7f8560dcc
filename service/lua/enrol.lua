-- Enrol a device with its one-use code: of any number of uses at once, exactly one finds the
-- code's digest still there and in time, and turns the device active with its key's digest;
-- the code is then gone. The key itself never reaches Redis.
-- Must change together: store/devices.py (KEYS, ARGV), device.lua (the fields).
--
-- KEYS[1]  device  the device's hash          dev:{devices}:<device id>
-- ARGV[1]  enrol_digest  the presented code's digest (hex)
-- ARGV[2]  key_digest    the new key's digest (hex)
-- ARGV[3]  software      what the device says it runs ('' for unsaid)
-- ARGV[4]  hardware
-- Returns  {'enrolled', enrolled_us}, or {'refused'}: no such device, not pending, another
--          code, or too late (the answer does not say which)

local device = KEYS[1]
local had = redis.call('HMGET', device, 'st', 'ed', 'eu')
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if had[1] ~= 'pending' or had[2] ~= ARGV[1] or not had[3] or tonumber(had[3]) < now_us then
  return {'refused'}
end
redis.call('HDEL', device, 'ed', 'eu')
redis.call('HSET', device, 'st', 'active', 'kd', ARGV[2], 'e', now_us, 'sw', ARGV[3], 'hw', ARGV[4])
return {'enrolled', now_us}
