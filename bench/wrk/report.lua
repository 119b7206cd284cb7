-- wrk script of the comparison harness (bench/compare.sh).
--
-- WRK_DELAY_MS > 0 gives the light-load shape: every connection pauses that
-- many milliseconds after each response before sending its next request, so
-- the offered rate is about connections / (delay + latency) and latency
-- percentiles show the cost of the hop rather than queueing. Unset or 0: a
-- closed loop at full speed (saturation). wrk calls delay() only when the
-- script defines it, so the saturation shape pays nothing for it.
--
-- done() prints one machine-readable line that compare.sh records:
--   requests=N duration_us=N errors=N non2xx=N p50_us=N p99_us=N p999_us=N max_us=N

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "requests=%d duration_us=%d errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
