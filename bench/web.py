"""Benchmark: ``GET /health/`` through quartstack's full web layer vs a bare Quart app.

Both servers run at the same time on the same Hypercorn settings and event loop
(bench/bare_app.py reuses ``quartstack.cli.hypercorn_config``); wrk drives one at
a time, alternating bare/full for ``--rounds`` rounds, and the medians are compared.
The goal from issue #2: the full web layer keeps at least 75% of the bare throughput.

Two ratios are reported: req/s (what the goal names) and server CPU time per
request (bare / full). On a shared machine other load steals wall-clock time from
whichever server is being measured, so the req/s ratio swings between runs; CPU
time per request barely moves, and when the server is the bottleneck the two agree.

The full app runs with its production defaults (LOG_LEVEL=INFO: one JSON access
line per request, written to a file), rate limiting off (it needs Redis, which
would measure Redis, not the web layer).

    .venv/bin/python -m bench.web [--duration 5] [--connections 32] [--rounds 5]
        [--log-level INFO] [--bare-security-headers]

``--bare-security-headers`` gives the bare app the API contract's nine security
headers too: Hypercorn's h11 layer validates and writes every header in pure Python,
so they are a large part of the gap, and this run shows what the rest costs.
"""

from __future__ import annotations

import argparse
import sys

from bench.wrkbench import (
    BenchServer,
    Target,
    WrkResult,
    add_common_arguments,
    format_table,
    goal_entry,
    measure,
    median_result,
    result_row,
    write_json,
)

GOAL = 0.75


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the full app")
    parser.add_argument(
        "--bare-security-headers",
        action="store_true",
        help="give the bare app the same security headers (their cost is then on both sides)",
    )
    add_common_arguments(parser)
    args = parser.parse_args()

    bare_cmd = [sys.executable, "-m", "bench.bare_app", "--bind", "{bind}", "--server", args.server]
    if args.bare_security_headers:
        bare_cmd.append("--security-headers")
    with (
        BenchServer(command=bare_cmd, ready_path="/health/") as bare,
        BenchServer({"LOG_LEVEL": args.log_level}, server=args.server) as full,
    ):
        targets = [
            Target("bare Quart /health/", "GET", bare.url + "/health/", pid=bare.pid),
            Target("quartstack /health/", "GET", full.url + "/health/", pid=full.pid),
        ]
        runs: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
        round_ratios: list[float] = []
        for round_number in range(args.rounds):
            rows = measure(
                "",
                targets if round_number % 2 == 0 else targets[::-1],
                duration=args.duration,
                connections=args.connections,
                warmup=args.warmup if round_number == 0 else 0,
            )
            for target, result in rows:
                runs[target.name].append(result)
            bare_r, full_r = (runs[t.name][-1] for t in targets)
            cpu = (bare_r.cpu_us_per_request or 0) / (full_r.cpu_us_per_request or 1)
            round_ratios.append(full_r.requests_per_second / bare_r.requests_per_second)
            print(
                f"round {round_number + 1}: req/s ratio "
                f"{full_r.requests_per_second / bare_r.requests_per_second:.2f}, "
                f"cpu ratio {cpu:.2f}",
                file=sys.stderr,
            )
    medians = [(t, median_result(runs[t.name])) for t in targets]
    bare_m, full_m = medians[0][1], medians[1][1]
    ratio = full_m.requests_per_second / bare_m.requests_per_second
    cpu_ratio = (bare_m.cpu_us_per_request or 0) / (full_m.cpu_us_per_request or 1)
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per server (alternating), "
        f"{args.connections} connections, 1 thread, loopback; medians; "
        f"full app LOG_LEVEL={args.log_level}; server {args.server}"
        + ("; bare app WITH the security headers" if args.bare_security_headers else "")
    )
    print(format_table(medians))
    for label, value in (("req/s", ratio), ("CPU per request", cpu_ratio)):
        verdict = "meets" if value >= GOAL else "MISSES"
        print(f"full/bare by {label}: {value:.2f} ({verdict} the {GOAL:.0%} goal)")
    write_json(
        args.json,
        "web",
        args.server,
        [result_row(t.name, r, bare_m) for t, r in medians],
        goals=[goal_entry("quartstack / bare Quart (/health/)", ratio, GOAL, round_ratios)],
        settings=f"{args.connections} connections, LOG_LEVEL={args.log_level}",
    )
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
