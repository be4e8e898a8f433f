-- wrk script for bench/http_load.py: POSTs one fixed multipart body
-- (file $FV_BODY, content type $FV_CT, API key $FV_KEY) and prints the
-- summary as one JSON line prefixed with FVJSON.
local f = assert(io.open(os.getenv("FV_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("FV_CT")
wrk.headers["X-API-Key"] = os.getenv("FV_KEY")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FVJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_ms":%d,"p95_ms":%d,' ..
    '"p99_ms":%d,"mean_ms":%f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(95), latency:percentile(99), latency.mean, e.connect, e.read, e.write,
    e.status, e.timeout))
end
