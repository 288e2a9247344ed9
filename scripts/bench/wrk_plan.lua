-- wrk script for `make bench`. Arguments (after `--`):
--   mode        "random" (GET a random line of the data file), "cycle" (GET the lines in turn)
--               or "post" (POST the body template with __ID__ replaced by a random line)
--   data_file   one path (GET) or one customer id (POST) per line
--   auth        the Authorization header value
--   path        POST only: the request path
--   body        POST only: the JSON body template
--   nonce       POST only: makes every Idempotency-Key of this run unique
-- done() prints one line "BENCH_JSON {...}" with the counts and latency percentiles (µs).

local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  mode, data_file, auth, post_path, body, nonce = args[1], args[2], args[3], args[4], args[5], args[6]
  lines = {}
  for line in io.lines(data_file) do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  math.randomseed(os.time() * 1000 + (tid or 0))
  counter = (tid or 0) - 1
end

function request()
  if mode == "post" then
    counter = counter + 1
    local id = lines[math.random(#lines)]
    local headers = {
      ["Authorization"] = auth,
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = string.format("%s-%d-%d", nonce, tid or 0, counter),
    }
    return wrk.format("POST", post_path, headers, (body:gsub("__ID__", id)))
  end
  local path
  if mode == "cycle" then
    counter = counter % #lines + 1
    path = lines[counter]
  else
    path = lines[math.random(#lines)]
  end
  return wrk.format("GET", path, { ["Authorization"] = auth })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99)))
end
