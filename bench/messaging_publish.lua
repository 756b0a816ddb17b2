-- wrk script: POST one JSON object to the messaging publish route.
-- The body comes from BENCH_BODY (set by bench/messaging.py); the queue is in the URL.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or '{"event":"bench"}'
