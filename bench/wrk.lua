-- wrk script for bench/run: method, body and headers from the environment, and a result
-- line with p50/p99/p99.9 (wrk's own --latency output stops at p99).
local method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local extra = os.getenv("WRK_HEADERS")
if extra then
  for pair in string.gmatch(extra, "[^|]+") do
    local k, v = pair:match("^%s*([^:]+):%s*(.*)$")
    if k then wrk.headers[k] = v end
  end
end

-- WRK_DELAY_MS paces each connection (a wait after each answer): a rough fixed rate, for
-- measuring latency below saturation. wrk waits whole milliseconds, so a fractional pause
-- is rounded up or down at random, to the asked mean.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms then
  local whole = math.floor(delay_ms)
  local fraction = delay_ms - whole
  function delay()
    if math.random() < fraction then return whole + 1 end
    return whole
  end
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d rps=%.1f p50=%.3f p99=%.3f p999=%.3f errors=%d non2xx=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    errors, summary.errors.status))
end
