-- rotate.lua: wrk requests that cycle over a list of paths, and a JSON summary.
--
--   wrk -t2 -c32 -d4s --latency -s bench/wrk/rotate.lua http://127.0.0.1:PORT -- PATHS_FILE
--
-- PATHS_FILE holds one request target per line ("/hls/dense/cbcs/video-1080p/seg-00001.m4s").
-- Each thread starts at its own offset in the list and then takes every path in turn, so all
-- connections together spread evenly over the files.  done() prints one line
-- "WRK_JSON {...}" with the raw counters and the latency percentiles in microseconds
-- (wrk's own histogram, not corrected for coordinated omission).

local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local paths = {}
local position = 0

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open the paths file")
  for line in file:lines() do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  file:close()
  assert(#paths > 0, "the paths file is empty")
  position = (thread_index or 0) * 7
end

function request()
  position = position + 1
  return wrk.format("GET", paths[(position % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "bytes": %d, "duration_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
