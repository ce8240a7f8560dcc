-- One wrk script for every bench scenario, chosen by the environment:
--   SCENARIO   create | get | invalidate | checkin | list | mix (10% create, 80% get, 10% invalidate)
--              | batch (POST /ticket/batch of BATCH_SIZE tickets of type general)
--   TOKEN      API key secret (optional)
--   READ_IDS   file of ticket ids to read, cycled
--   FRESH_IDS  file of ticket ids to invalidate or check in, each used once
--   LIST_ID    the check-in list of the checkin scenario
-- Run with -t1 so that one Lua state hands out the fresh ids. done() prints one JSON line.
local scenario = os.getenv("SCENARIO")
local token = os.getenv("TOKEN")
local threads = {}

local function load(path)
  local ids = {}
  if path then
    for line in io.lines(path) do ids[#ids + 1] = line end
  end
  return ids
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected, n, reads, fresh = 0, 0, load(os.getenv("READ_IDS")), load(os.getenv("FRESH_IDS"))
  used_fresh = 0
  hdrs = {}
  if token and token ~= "" then hdrs["Authorization"] = "Bearer " .. token end
  json_hdrs = {["Content-Type"] = "application/json"}
  local size = tonumber(os.getenv("BATCH_SIZE") or "1000")
  batch_body = '{"tickets":[' .. string.rep('{"type":"general"},', size - 1) .. '{"type":"general"}]}'
  for k, v in pairs(hdrs) do json_hdrs[k] = v end
end

local function kind()
  if scenario ~= "mix" then return scenario end
  local r = n % 10
  if r == 0 then return "create" elseif r == 5 then return "invalidate" else return "get" end
end

function request()
  n = n + 1
  local k = kind()
  if k == "create" then
    return wrk.format("POST", "/ticket", hdrs)
  elseif k == "get" then
    return wrk.format("GET", "/ticket/" .. reads[(n % #reads) + 1], hdrs)
  elseif k == "invalidate" then
    used_fresh = used_fresh + 1
    return wrk.format("POST", "/ticket/" .. fresh[used_fresh] .. "/invalidate", hdrs)
  elseif k == "checkin" then
    used_fresh = used_fresh + 1
    local body = '{"ticket":"' .. fresh[used_fresh] .. '","list":"' .. os.getenv("LIST_ID") .. '"}'
    return wrk.format("POST", "/checkin", json_hdrs, body)
  elseif k == "batch" then
    return wrk.format("POST", "/ticket/batch", json_hdrs, batch_body)
  else
    return wrk.format("GET", "/ticket?limit=100", hdrs)
  end
end

function response(status, headers, body)
  if status ~= 200 and status ~= 201 then unexpected = unexpected + 1 end
  -- A scan refused (200 with admitted false) would measure the wrong path.
  if scenario == "checkin" and not string.find(body, '"admitted":%s*true') then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local bad, fresh_used = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("unexpected")
    fresh_used = fresh_used + t:get("used_fresh")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"unexpected":%d,' ..
    '"socket_errors":%d,"fresh_used":%d,"bytes":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad,
    e.connect + e.read + e.write + e.timeout, fresh_used, summary.bytes))
end
