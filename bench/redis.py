"""Redis benchmarks (issue #5): cache reads vs /health/, and the rate limiter's cost.

1. GET /examples/cache/{key} vs GET /health/ on one server (goal: >= 60%).
2. GET /examples/cache/{key} with rate limiting on (one atomic Lua call per request)
   vs the same server with limiting off; the limit is set high so nothing is refused.

    .venv/bin/python -m bench.redis [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse

import redis

from bench.wrkbench import BenchServer, Target, format_table, measure

KEY = "bench:cache-key"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    redis.Redis(port=6379).set(KEY, "x" * 64)
    base = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379"}
    targets = [Target("health", "GET", "/health/"), Target("cache-get", "GET",
                                                           f"/examples/cache/{KEY}")]
    with BenchServer(base) as server:
        rows = measure(server.url, targets, duration=args.duration,
                       connections=args.connections)
    print("cache read vs /health/ (rate limiting off)")
    print(format_table(rows))
    limited = {**base, "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "100000000",
               "RATE_LIMIT_HEALTH": "100000000"}
    with BenchServer(base) as off:
        off_rows = measure(off.url, targets[1:], duration=args.duration,
                           connections=args.connections)
    with BenchServer(limited) as on:
        on_rows = measure(on.url, targets[1:], duration=args.duration,
                          connections=args.connections)
    off_rps, on_rps = off_rows[0][1].requests_per_second, on_rows[0][1].requests_per_second
    print(f"\nrate limiter cost on {targets[1].path}: off {off_rps:.0f} req/s, "
          f"on {on_rps:.0f} req/s, ratio {on_rps / off_rps:.2f}")
    redis.Redis(port=6379).delete(KEY)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
