-- Read several tickets of one shard in one step (a page of a listing).
--
-- KEYS[1..n]  ticket hashes, all of one shard   tkt:{<shard>}:<id>
-- ARGV        none
-- Returns  {ts1, valid1, ts2, valid2, ...} in the order of KEYS; false, false for a
--          ticket that does not exist
local out = {}
for i = 1, #KEYS do
  local t = redis.call('HMGET', KEYS[i], 'ts', 'valid')
  out[#out + 1], out[#out + 2] = t[1], t[2]
end
return out
