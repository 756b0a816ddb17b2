"""Benchmark: the cost of tracing, on ``/examples/database/postgres/query``.

Two real ``quartstack serve`` processes with the same PostgreSQL account (a role and
database of this run's own; credentials from the environment, no Vault or Redis in the
path): one with tracing off, one with tracing on at 100 % sampling
(``OTEL_TRACES_SAMPLER=always_on``) exporting over OTLP/HTTP to a real receiver in this
process (tests/support/otlp.py). The receiver parses every export and counts its spans
(``--receiver counting``, the default) rather than turning each span into Python
objects (``--receiver decoding``, what the tests do): the receiver shares the two cores
with the servers and wrk, and its CPU is not the app's cost (a collector runs
elsewhere); measured, decoding took a few hundredths off the on/off ratio. Each round measures both,
back to back, with wrk, in the other order every other round; the medians and the
median of the rounds' on/off throughput ratios are reported, with the servers' CPU time
per request. Goal from issue #13: tracing
on keeps at least 80 % of the throughput with tracing off.

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.tracing [--duration 10] [--connections 32] [--rounds 3]
        [--server hypercorn|uvicorn] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.wrkbench import (
    BenchServer,
    Target,
    WrkResult,
    add_common_arguments,
    alternating_rounds,
    format_table,
    goal_entry,
    median_result,
    result_row,
    write_json,
)
from tests.support.databases import PostgresDatabase
from tests.support.otlp import OtlpReceiver

GOAL = 0.80
PATH = "/examples/database/postgres/query"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument(
        "--receiver",
        choices=("counting", "decoding"),
        default="counting",
        help="count the spans of each export, or decode them into objects as the tests do",
    )
    add_common_arguments(parser)
    args = parser.parse_args()

    postgres = PostgresDatabase()
    db = postgres.create()
    env = {
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_USER": db.user,
        "POSTGRES_PASSWORD": db.password,
        "POSTGRES_DATABASE": db.database,
        "POSTGRES_POOL_MAX": str(args.pool_max),
    }
    ratios: list[float] = []
    try:
        with (
            OtlpReceiver(keep=args.receiver == "decoding") as receiver,
            BenchServer({**env, "OTEL_SDK_DISABLED": "true"}, server=args.server) as off,
            BenchServer(
                {
                    **env,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_TRACES_SAMPLER": "always_on",
                    "OTEL_SDK_DISABLED": "false",
                },
                server=args.server,
            ) as on,
        ):
            assert off.process is not None and on.process is not None
            targets = [
                Target("tracing off", "GET", off.url + PATH, pid=off.process.pid),
                Target("tracing on", "GET", on.url + PATH, pid=on.process.pid),
            ]

            def report_round(number: int, by_name: dict[str, WrkResult]) -> None:
                ratios.append(
                    by_name["tracing on"].requests_per_second
                    / by_name["tracing off"].requests_per_second
                )
                receiver.clear()  # keep the receiver's memory flat between rounds
                print(f"round {number + 1}: on/off {ratios[-1]:.2f}", file=sys.stderr)

            runs, _ = alternating_rounds(
                off.url,
                targets,
                rounds=args.rounds,
                duration=args.duration,
                connections=args.connections,
                warmup=args.warmup,
                after_round=report_round,
            )
        spans = receiver.span_count  # read once the servers stopped (their last exports)
    finally:
        postgres.drop()

    medians = [(t, median_result(runs[t.name])) for t in targets]
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per target, {args.connections} connections, "
        f"1 thread, loopback; medians; pool max {args.pool_max}; 100 % sampling, OTLP/HTTP "
        f"to a local receiver ({spans} spans received)"
    )
    print(format_table(medians))
    failed = sum(result.non_2xx + result.socket_errors for _, result in medians)
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(
        f"tracing on / off throughput, median of the rounds' ratios "
        f"({', '.join(f'{r:.2f}' for r in ratios)}): {ratio:.2f} ({verdict} the {GOAL:.0%} goal)"
    )
    cpu_off, cpu_on = (result.cpu_us_per_request for _, result in medians)
    if cpu_off and cpu_on:
        print(f"tracing on / off by server CPU per request: {cpu_off / cpu_on:.2f}")
    write_json(
        args.json,
        "tracing",
        args.server,
        [result_row(t.name, r, medians[0][1]) for t, r in medians],
        goals=[goal_entry("tracing on / off (postgres query)", ratio, GOAL, ratios)],
        settings=f"{args.connections} connections, 100 % sampling, {spans} spans received",
    )
    if failed:
        print(f"{failed} requests were not 2xx or hit socket errors", file=sys.stderr)
    if not spans:
        print("the receiver got no spans: tracing was not on", file=sys.stderr)
        return 1
    return 0 if ratio >= GOAL and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
