-- Create a device (a gate's phone, a scanner, a box office's tablet) in one step: its hash,
-- pending until it enrols, and its place in the device index. A device made under a request
-- mark (the caller and request id its id derives from) is that request's: the same request
-- again gets it back with a fresh enrolment code, not a second device. Only the enrolment
-- code's digest is kept, with when it stops working.
-- Must change together: store/devices.py (KEYS, ARGV, the hash's fields), enrol.lua and
-- device_state.lua (the states).
--
-- Device hash fields: n (name), ro (role), ev (event, '' for any), ls (lists, comma-separated),
-- dir (direction, '' for either), st ('pending', 'active', 'revoked'), c (created, µs),
-- ed (the enrolment code's digest), eu (until when it works, µs), m (the request mark),
-- kd (the key's digest), e (enrolled, µs), sw, hw (what it said it runs on), x (revoked, µs),
-- r (rolled, µs), seen (last seen, µs).
--
-- KEYS[1]  device  the device's hash          dev:{devices}:<device id>
-- KEYS[2]  index   every device's id          devs:{devices}
-- ARGV[1]  device_id
-- ARGV[2]  name
-- ARGV[3]  role        'scanner', 'issuer' or 'admin'
-- ARGV[4]  event       the event it is bound to, '' for none
-- ARGV[5]  lists       the lists it may scan at, comma-separated, '' for all
-- ARGV[6]  direction   'entry' or 'exit' when fixed, '' for either
-- ARGV[7]  enrol_digest  the enrolment code's digest (hex)
-- ARGV[8]  enrol_ttl_us  how long the code works, µs
-- ARGV[9]  mark        the request's mark, '' for none (a random id)
-- Returns  {'created', created_us, until_us}: a new device;
--          {'replayed', created_us, until_us}: the same request's, with the new code;
--          {'taken'}: another device has this id (nothing changed)

local device = KEYS[1]
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local until_us = now_us + tonumber(ARGV[8])
local mark = ARGV[9]

if redis.call('EXISTS', device) == 1 then
  local had = redis.call('HMGET', device, 'm', 'st', 'c')
  if mark == '' or had[1] ~= mark or had[2] ~= 'pending' then return {'taken'} end
  redis.call('HSET', device, 'ed', ARGV[7], 'eu', until_us)
  return {'replayed', tonumber(had[3]), until_us}
end
redis.call('HSET', device, 'n', ARGV[2], 'ro', ARGV[3], 'ev', ARGV[4], 'ls', ARGV[5], 'dir', ARGV[6],
  'st', 'pending', 'c', now_us, 'ed', ARGV[7], 'eu', until_us, 'm', mark)
redis.call('SADD', KEYS[2], ARGV[1])
return {'created', now_us, until_us}
