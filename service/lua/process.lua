-- The tickets processor's step for a batch of one shard's stream entries: record each of
-- their changes in their tickets' histories and count them, then acknowledge the entries. A
-- history is keyed by change id, so an entry delivered twice (a crash before the ack, a claim from a
-- dead consumer) is recorded and counted once.
-- An entry whose ticket lives in another shard (a scan, at this shard's list, of another
-- event's ticket) or that names no ticket (a token that did not verify) has no history
-- here: it stays in its list's counters and the feed, and is counted once through the
-- shard's `unowned` hash of entry ids (which expires a day after it first appears). A
-- `removed` change (withdraw.lua) is counted so too, and deletes its ticket's history.
--
-- KEYS[1]  processed  processor counters of the shard   processed:{<shard>}  (field: change type)
-- KEYS[2]  stream  change stream of the shard         events:{<shard>}
-- KEYS[3]  unowned  changes with no history here       unowned:{<shard>}
-- KEYS[4]  device_scans  scans by device and outcome   devscans:{<shard>}  (field: <device id>:<type>)
-- KEYS[5..n]  tail  the history of each change's ticket   history:{<shard>}:<id>, one per change
--             with a history; and the scan log of each scan's event   scans:{<shard>}:<event id>
-- ARGV[1]  group   the consumer group
-- ARGV[2]  m       how many entries to acknowledge
-- ARGV[3..2+m]  entry_ids  their entry ids
-- ARGV[3+m..]  per_change  per change (an entry of a batch's tickets holds one per ticket): change id,
--           change type, change as JSON, the index in KEYS of its history ('0': none,
--           KEYS[3] takes it), the device that made a scan ('' for none), and the index in KEYS
--           of its event's scan log ('0': not a scan). A scan new here is added to its event's
--           log (GET /event/{id}/scans): its fields, in name order, and its change id.
-- Returns  how many changes were counted now (the rest had been already)
local group, unowned, m = ARGV[1], KEYS[3], tonumber(ARGV[2])

-- The same fields in the same order each time: a stream stores repeated field names once.
local function log_scan(key, id, body)
  local fields, names = cjson.decode(body), {}
  for name in pairs(fields) do names[#names + 1] = name end
  table.sort(names)
  local row = {'c', id}
  for _, name in ipairs(names) do
    row[#row + 1] = name
    row[#row + 1] = fields[name]
  end
  redis.call('XADD', key, '*', unpack(row))
end
local new, counts, by_device = 0, {}, {}
for a = 3 + m, #ARGV, 6 do
  local id, kind, body, at, device = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
  local scan_log = tonumber(ARGV[a + 5])
  local fresh
  if at == 0 or kind == 'removed' then
    fresh = redis.call('HSETNX', unowned, id, kind)
    redis.call('EXPIRE', unowned, 86400, 'NX')
    -- A removed ticket's history goes with it: its earlier changes were recorded before
    -- (one stream, read in order), and no read shows a history without its ticket.
    if at > 0 then redis.call('DEL', KEYS[at]) end
  else
    fresh = redis.call('HSETNX', KEYS[at], id, body)
  end
  if fresh == 1 then
    counts[kind] = (counts[kind] or 0) + 1
    if device ~= '' then
      local field = device .. ':' .. kind
      by_device[field] = (by_device[field] or 0) + 1
    end
    new = new + 1
    if scan_log > 0 then log_scan(KEYS[scan_log], id, body) end
  end
end
-- One HINCRBY per kind of change, not per change: a batch of a thousand tickets is a thousand
-- `created` changes, and each redis.call costs about as much again as its command.
for kind, count in pairs(counts) do
  redis.call('HINCRBY', KEYS[1], kind, count)
end
for field, count in pairs(by_device) do
  redis.call('HINCRBY', KEYS[4], field, count)
end
if m > 0 then
  redis.call('XACK', KEYS[2], group, unpack(ARGV, 3, 2 + m))
end
return new
