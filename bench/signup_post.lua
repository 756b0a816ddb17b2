-- wrk script: POST /users with a unique email per request (run prefix from /dev/urandom,
-- so the warm-up and the measured run never collide), and report p95 in wrk's own
-- percentile format so bench/wrkbench.py's parser picks it up.
local urandom = io.open("/dev/urandom", "rb")
local prefix = urandom:read(6):gsub(".", function(c) return string.format("%02x", c:byte()) end)
urandom:close()
local n = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local body = string.format('{"email":"b-%s-%d@bench.example","name":"Bench"}', prefix, n)
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format("    95%%   %.2fms\n", latency:percentile(95) / 1000))
end
