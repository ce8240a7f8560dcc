-- When devices were last seen, as one worker saw them since its last flush: each device's
-- `seen` moves forward only (another worker may have seen it later), and a device that is
-- gone is not made again. A flush a worker every few seconds, not a write per request.
-- Must change together: store/devices.py (KEYS, ARGV), api/device_cache.py (the flush).
--
-- KEYS[1..n]  devices  the devices' hashes     dev:{devices}:<device id>
-- ARGV[1..n]  seen_us  when each was last seen, µs
-- Returns  how many devices moved on

local moved = 0
for i, device in ipairs(KEYS) do
  local had = redis.call('HMGET', device, 'st', 'seen')
  if had[1] and tonumber(had[2] or '0') < tonumber(ARGV[i]) then
    redis.call('HSET', device, 'seen', ARGV[i])
    moved = moved + 1
  end
end
return moved
