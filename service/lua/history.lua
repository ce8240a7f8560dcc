-- Read one ticket's history, as the tickets processor recorded it, and whether the ticket
-- exists, in one step.
--
-- KEYS[1]  ticket  ticket hash                 t:{<shard>}:<id>
-- KEYS[2]  history  history of the ticket       history:{<shard>}:<id>  (field: stream entry id)
-- ARGV     none
-- Returns  {exists, entry_id1, event1, entry_id2, event2, ...}
--          exists: 1 or 0; changes are JSON, in no particular order
local out = {redis.call('EXISTS', KEYS[1])}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat do
  out[#out + 1] = flat[i]
end
return out
