"""Benchmark: the Redis cache route against ``/health/``, and the rate limiter's cost.

Two real ``quartstack serve`` processes run at once against the machine's Redis on
:6379, identical except for rate limiting:

- ``plain``: ``RATE_LIMIT_ENABLED=false``;
- ``limited``: rate limiting on, with limits so high that nothing is refused (the
  per-request cost is one EVALSHA of the GCRA script whether or not it refuses).

wrk drives one target at a time, in alternating order over ``--rounds`` rounds;
medians are compared. Reported:

1. ``GET /examples/cache/{key}`` (a GET+TTL pipeline to Redis) vs ``GET /health/``
   (no backend) on the plain server. Goal from issue #5: at least 60% of the
   throughput.
2. The limiter's cost per request: ``/health/`` on the limited vs the plain server,
   as server CPU time and p50 latency added, and the throughput ratio; plus the
   Redis server's own CPU time per limited request.

Both req/s and server CPU time per request are shown: on a shared 2-core machine
wall-clock throughput swings with other load, CPU time per request barely does.

    .venv/bin/python -m bench.redis [--duration 5] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import uuid

from bench.wrkbench import (
    BenchServer,
    Target,
    WrkResult,
    add_common_arguments,
    format_table,
    goal_entry,
    measure,
    median_result,
    process_cpu_seconds,
    result_row,
    write_json,
)

GOAL = 0.60
NO_REFUSALS = str(10**9)  # requests per minute: the limiter runs, never refuses


def _redis_cli(*args: str) -> str:
    """redis-cli, not redis-py: this module's own name would shadow the package when
    the file is run as a script."""
    return subprocess.run(
        ["redis-cli", "-p", "6379", *args], check=True, capture_output=True, text=True
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2)
    add_common_arguments(parser)
    args = parser.parse_args()

    info = dict(line.split(":", 1) for line in _redis_cli("info", "server").split() if ":" in line)
    redis_pid = int(info["process_id"])
    key = f"bench-{uuid.uuid4().hex[:12]}"
    _redis_cli("set", key, "x" * 64)
    common = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379", "LOG_LEVEL": "INFO"}
    limited_env = {
        **common,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_DEFAULT": NO_REFUSALS,
        "RATE_LIMIT_HEALTH": NO_REFUSALS,
    }
    redis_cpu: list[float] = []
    try:
        with (
            BenchServer(common, server=args.server) as plain,
            BenchServer(limited_env, server=args.server) as limited,
        ):
            targets = [
                Target("plain /health/", "GET", plain.url + "/health/", pid=plain.pid),
                Target(
                    "plain cache read", "GET", f"{plain.url}/examples/cache/{key}", pid=plain.pid
                ),
                Target("limited /health/", "GET", limited.url + "/health/", pid=limited.pid),
                Target(
                    "limited cache read",
                    "GET",
                    f"{limited.url}/examples/cache/{key}",
                    pid=limited.pid,
                ),
            ]
            runs: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
            ratios: list[float] = []
            for round_number in range(args.rounds):
                order = targets if round_number % 2 == 0 else targets[::-1]
                for target in order:
                    redis_before = process_cpu_seconds(redis_pid)
                    [(_, result)] = measure(
                        "",
                        [target],
                        duration=args.duration,
                        connections=args.connections,
                        warmup=args.warmup if round_number == 0 else 0,
                    )
                    runs[target.name].append(result)
                    if target.name == "limited /health/" and result.requests:
                        used = process_cpu_seconds(redis_pid) - redis_before
                        redis_cpu.append(used / result.requests * 1e6)
                ratios.append(
                    runs["plain cache read"][-1].requests_per_second
                    / runs["plain /health/"][-1].requests_per_second
                )
                print(f"round {round_number + 1}: cache/health {ratios[-1]:.2f}", file=sys.stderr)
    finally:
        _redis_cli("del", key)

    medians = {t.name: median_result(runs[t.name]) for t in targets}
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per target (alternating order), "
        f"{args.connections} connections, 1 thread, loopback; medians; LOG_LEVEL=INFO"
    )
    print(format_table([(t, medians[t.name]) for t in targets]))

    health, cache = medians["plain /health/"], medians["plain cache read"]
    ratio = cache.requests_per_second / health.requests_per_second
    cpu_ratio = (health.cpu_us_per_request or 0) / (cache.cpu_us_per_request or 1)
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(
        f"\ncache read / health: {ratio:.2f} by req/s, {cpu_ratio:.2f} by server CPU "
        f"per request ({verdict} the {GOAL:.0%} goal)"
    )

    limited_health = medians["limited /health/"]
    cpu_added = (limited_health.cpu_us_per_request or 0) - (health.cpu_us_per_request or 0)
    print(
        f"rate limiter cost on /health/: {cpu_added:+.0f} us server CPU per request, "
        f"{limited_health.p50 - health.p50:+.2f} ms p50, throughput "
        f"{limited_health.requests_per_second / health.requests_per_second:.2f} of unlimited; "
        f"redis-server CPU {statistics.median(redis_cpu) if redis_cpu else float('nan'):.0f} us "
        f"per limited request"
    )
    write_json(
        args.json,
        "redis",
        args.server,
        [result_row(t.name, medians[t.name], health) for t in targets],
        goals=[goal_entry("cache read / health", statistics.median(ratios), GOAL, ratios)],
        settings=f"{args.connections} connections; limited = rate limiting on, never refusing",
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
