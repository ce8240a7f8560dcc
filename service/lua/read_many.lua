-- Read several tickets of one shard in one step (a page of a listing).
--
-- KEYS[1..n]  tickets  ticket hashes, all of one shard   t:{<shard>}:<id>
-- ARGV        none
-- Returns  {ts1, valid1, ty1, h1, st1, vf1, vu1, ts2, ...}: seven values a ticket, in the
--          order of KEYS ('' for a field the ticket lacks; ts '' for a missing ticket)
local out = {}
for i = 1, #KEYS do
  local t = redis.call('HMGET', KEYS[i], 'ts', 'valid', 'ty', 'h', 'st', 'vf', 'vu')
  for j = 1, 7 do out[#out + 1] = t[j] or '' end
end
return out
