"""Benchmark: ``GET /health/`` through quartstack's full web layer vs a bare Quart app.

Both servers run at the same time on the same Hypercorn settings and event loop
(bench/bare_app.py reuses ``quartstack.cli.hypercorn_config``); wrk drives one at
a time, alternating bare/full for ``--rounds`` rounds, and the medians are compared.
The goal from issue #2: the full web layer keeps at least 75% of the bare throughput.

The full app runs with its production defaults (LOG_LEVEL=INFO: one JSON access
line per request, written to a file), rate limiting off (it needs Redis, which
would measure Redis, not the web layer).

    .venv/bin/python -m bench.web [--duration 10] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.wrkbench import BenchServer, Target, WrkResult, format_table, measure

GOAL = 0.75


def _median(results: list[WrkResult]) -> WrkResult:
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    middle = ordered[len(ordered) // 2]
    return WrkResult(
        requests=sum(r.requests for r in results),
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        latency_ms=middle.latency_ms,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the full app")
    args = parser.parse_args()

    bare_cmd = [sys.executable, "-m", "bench.bare_app", "--bind", "{bind}"]
    with (
        BenchServer(command=bare_cmd, ready_path="/health/") as bare,
        BenchServer({"LOG_LEVEL": args.log_level}) as full,
    ):
        targets = [
            Target("bare Quart /health/", "GET", bare.url + "/health/"),
            Target("quartstack /health/", "GET", full.url + "/health/"),
        ]
        runs: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
        for round_number in range(args.rounds):
            rows = measure(
                "",
                targets,
                duration=args.duration,
                connections=args.connections,
                warmup=args.warmup if round_number == 0 else 0,
            )
            for target, result in rows:
                runs[target.name].append(result)
            ratio = rows[1][1].requests_per_second / rows[0][1].requests_per_second
            print(f"round {round_number + 1}: ratio {ratio:.2f}", file=sys.stderr)
    medians = [(t, _median(runs[t.name])) for t in targets]
    ratio = medians[1][1].requests_per_second / medians[0][1].requests_per_second
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per server, {args.connections} connections, "
        f"1 thread, loopback; medians; full app LOG_LEVEL={args.log_level}"
    )
    print(format_table(medians))
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(f"full/bare throughput: {ratio:.2f} ({verdict} the {GOAL:.0%} goal)")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
