-- wrk script for bench/serving.py: POST one JSON body (read from the file named by the
-- BENCH_BODY_FILE environment variable) on every request, and print the run's figures as one
-- JSON line prefixed with BENCH_RESULT so that serving.py can parse them. With BENCH_PATHS_FILE
-- (one URL path a line), the requests go to those paths in turn (bench/growth.py spreads its load
-- evenly over many experiments this way). With BENCH_BODIES_FILE (one JSON body a line), the
-- requests carry those bodies in turn (bench/_serving_aggregates.py: a unit_id per request).

local path = os.getenv("BENCH_BODY_FILE")
if path == nil then
  error("BENCH_BODY_FILE is not set")
end
local fh = assert(io.open(path, "rb"))
local body = fh:read("*a")
fh:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

-- The non-empty lines of a file named by an environment variable, or nil when it is unset.
local function lines_of(name)
  local file = os.getenv(name)
  if file == nil or file == "" then return nil end
  local out = {}
  for line in io.lines(file) do
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end

local bodies, paths = lines_of("BENCH_BODIES_FILE"), lines_of("BENCH_PATHS_FILE")
if bodies and paths then
  error("BENCH_BODIES_FILE and BENCH_PATHS_FILE: set one, not both")
end
local turn = 0
if bodies then
  request = function()
    turn = turn % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[turn])
  end
elseif paths then
  request = function()
    turn = turn % #paths + 1
    return wrk.format(nil, paths[turn])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({50, 90, 99, 99.9}) do
    pct[#pct + 1] = string.format('"%s": %.1f', tostring(p), latency:percentile(p))
  end
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "max": %.1f, "stdev": %.1f, %s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency.stdev, table.concat(pct, ", ")))
end
