-- wrk script for scripts/loadtest.sh: OFREP POST requests with contexts drawn
-- from many users. Arguments (after "--"): MODE TOKEN FLAGS
--   MODE single: POST /ofrep/v1/evaluate/flags/flag-NNN, a random one of FLAGS flags per request
--   MODE bulk:   POST /ofrep/v1/evaluate/flags (every flag)
--   MODE noop:   POST /_bench/noop (the no-op echo handler, same bodies)
-- done() prints one line: RESULT requests duration_us socket_errors bad_status p50_us p90_us p99_us

local mode, nflags
local domains = { "acme.com", "globex.com", "example.com", "initech.com", "gmail.com" }
local users = 1000000

function init(args)
  mode = args[1] or "single"
  nflags = tonumber(args[3] or "100")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  local u = math.random(users)
  local body = string.format('{"context":{"targetingKey":"user-%d","email":"user%d@%s","plan":"%s"}}',
    u, u % 1000, domains[(u % #domains) + 1], (u % 3 == 0) and "pro" or "free")
  local path
  if mode == "bulk" then
    path = "/ofrep/v1/evaluate/flags"
  elseif mode == "noop" then
    path = "/_bench/noop"
  else
    path = string.format("/ofrep/v1/evaluate/flags/flag-%03d", math.random(nflags) - 1)
  end
  return wrk.format(nil, path, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
