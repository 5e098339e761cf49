-- wrk: POST a job (the body and token come from the environment).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
done = function(summary, latency)
  -- One line wrk's caller reads: requests per second and p99 (ms), and
  -- answers that were not 2xx.
  local bad = summary.errors.status
  io.write(string.format("RESULT %.1f %.2f %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, bad))
end
