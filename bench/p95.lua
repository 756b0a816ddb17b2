-- wrk script: a plain GET that also reports p95 in wrk's percentile format
-- (wrk --latency prints 50/75/90/99 only).
done = function(summary, latency, requests)
  io.write(string.format("    95%%   %.2fms\n", latency:percentile(95) / 1000))
end
