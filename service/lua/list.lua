-- Read up to `limit` tickets of one shard, walking its id index with SSCAN.
-- Each SSCAN batch is sorted, so a page that ends inside a batch resumes at the same SSCAN
-- cursor after the last id it returned. COUNT is fixed, never the room left on the page,
-- so the same cursor yields the same batch again. SSCAN's guarantee carries over: every id present
-- for the whole walk is returned; an id may come twice if the set is rehashed meanwhile.
-- The ticket hashes are read by name: they carry KEYS[1]'s hash tag, so they live in the
-- same slot, which keeps the script valid on Redis Cluster.
--
-- KEYS[1]  id index of the shard   tickets:{<shard>}
-- ARGV[1]  SSCAN cursor to start at ('0' for the start of the shard)
-- ARGV[2]  resume after this id within the first batch ('' for none)
-- ARGV[3]  limit: most tickets to return (>= 1)
-- ARGV[4]  ticket key prefix of the shard   tkt:{<shard>}:
-- ARGV[5]  max_batches: SSCAN calls allowed, so that a sparse set cannot stall Redis
-- ARGV[6]  scan_count: the COUNT of every SSCAN call (must not change between pages)
-- Returns  {next_cursor, resume_after, id1, ts1, valid1, id2, ts2, valid2, ...}
--          next_cursor '0' with resume_after '' means the shard is done
local cursor, after = ARGV[1], ARGV[2]
local limit, max_batches, scan_count = tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[6]
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
        out[1], out[2] = batch_start, out[#out - 2]
        return out
      end
      local t = redis.call('HMGET', ARGV[4] .. id, 'ts', 'valid')
      if t[1] then
        out[#out + 1], out[#out + 2], out[#out + 3] = id, t[1], t[2]
        n = n + 1
      end
    end
  end
  after = ''
  if cursor == '0' or n == limit then break end
end
out[1] = cursor
return out
