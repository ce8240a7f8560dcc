-- Walk one shard's id index with SSCAN, for listing: up to `limit` ids from a position.
-- Each SSCAN batch is sorted, so a page that ends inside a batch resumes at the same SSCAN
-- cursor after the last id it returned. COUNT is fixed, never the room left on the page, so
-- the same cursor yields the same batch again. SSCAN's guarantee carries over: every id
-- present for the whole walk is returned; one may come twice if the set is rehashed meanwhile.
-- The tickets themselves are read by read_many.lua, which gets their keys through KEYS.
--
-- KEYS[1]  index  id index of the shard   tickets:{<shard>}
-- ARGV[1]  cursor        SSCAN cursor to start at ('0' for the start of the shard)
-- ARGV[2]  after         resume after this id within the first batch ('' for none)
-- ARGV[3]  limit         most ids to return (>= 1)
-- ARGV[4]  max_batches   SSCAN calls allowed, so that a sparse set cannot stall Redis
-- ARGV[5]  scan_count    the COUNT of every SSCAN call (must not change between pages)
-- Returns  {next_cursor, resume_after, id1, id2, ...}
--          next_cursor '0' with resume_after '' means the shard is done
local cursor, after = ARGV[1], ARGV[2]
local limit, max_batches, scan_count = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local out = {'0', ''}
local n = 0
for _ = 1, max_batches do
  local batch_start = cursor
  local reply = redis.call('SSCAN', KEYS[1], cursor, 'COUNT', scan_count)
  cursor = reply[1]
  local ids = reply[2]
  table.sort(ids)
  for _, id in ipairs(ids) do
    if after == '' or id > after then
      if n == limit then
        out[1], out[2] = batch_start, out[#out]
        return out
      end
      out[#out + 1] = id
      n = n + 1
    end
  end
  after = ''
  if cursor == '0' or n == limit then break end
end
out[1] = cursor
return out
