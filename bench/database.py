"""Benchmark: the database example routes against ``/health/`` on the same server.

Creates a role and database of its own on the machine's PostgreSQL (and a user
and database on MariaDB, and an nx-27017 process for MongoDB, when asked), starts
a real ``quartstack serve`` with them (the local-development environment fallback
for credentials: no Vault or Redis in the path) and drives it with wrk. Each round
measures ``GET /health/`` (the baseline: the same HTTP stack, no backend), then
every database route, in turn; the medians over the rounds are reported as ratios
against the baseline, because absolute numbers drift between runs on shared
machines. The server's CPU time per request is reported too (steadier than req/s
when other work shares the machine; it leaves out the database server's own CPU).
Goal: ``/examples/database/postgres/query`` keeps at least 70% of the ``/health/``
throughput (issue #18; issue #4 asked for 60%).

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.database [--duration 10] [--connections 32] [--rounds 3]
        [--pool-max 10] [--databases postgres,mysql,mongodb]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import uuid
from collections.abc import Iterator

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
from tests.support.databases import MySQLDatabase, PostgresDatabase
from tests.support.mongo import NxMongoServer

GOAL = 0.70
BASELINE = Target("/health/", "GET", "/health/")


@contextlib.contextmanager
def _database_env(databases: list[str], pool_max: int) -> Iterator[dict[str, str]]:
    """Accounts of this run's own on the machine's servers, as the server's environment."""
    env: dict[str, str] = {}
    with contextlib.ExitStack() as cleanup:
        if "postgres" in databases:
            postgres = PostgresDatabase()
            db = postgres.create()
            cleanup.callback(postgres.drop)
            env |= {
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_USER": db.user,
                "POSTGRES_PASSWORD": db.password,
                "POSTGRES_DATABASE": db.database,
                "POSTGRES_POOL_MAX": str(pool_max),
            }
        if "mysql" in databases:
            mysql = MySQLDatabase()
            db = mysql.create()
            cleanup.callback(mysql.drop)
            env |= {
                "MYSQL_HOST": "127.0.0.1",
                "MYSQL_USER": db.user,
                "MYSQL_PASSWORD": db.password,
                "MYSQL_DATABASE": db.database,
                "MYSQL_POOL_MAX": str(pool_max),
            }
        if "mongodb" in databases:
            mongo = cleanup.enter_context(NxMongoServer())
            env |= {
                "MONGODB_HOST": "127.0.0.1",
                "MONGODB_PORT": str(mongo.port),
                "MONGODB_DATABASE": f"bench_{uuid.uuid4().hex[:8]}",
                "MONGODB_POOL_MAX": str(pool_max),
            }
        yield env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--databases", default="postgres", help="comma-separated: postgres, mysql, mongodb"
    )
    add_common_arguments(parser)
    args = parser.parse_args()
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if "postgres" not in databases:
        parser.error("postgres is the route the goal is about; keep it in --databases")

    targets = [BASELINE] + [
        Target(f"{name} query", "GET", f"/examples/database/{name}/query") for name in databases
    ]
    ratios: list[float] = []

    def report_round(round_number: int, by_name: dict[str, WrkResult]) -> None:
        ratios.append(
            by_name[targets[1].name].requests_per_second
            / by_name[BASELINE.name].requests_per_second
        )
        print(f"round {round_number + 1}: postgres/health {ratios[-1]:.2f}", file=sys.stderr)

    with (
        _database_env(databases, args.pool_max) as env,
        BenchServer({**env, "LOG_LEVEL": args.log_level}, server=args.server) as server,
    ):
        runs, _ = alternating_rounds(
            server.url,
            targets,
            rounds=args.rounds,
            duration=args.duration,
            connections=args.connections,
            warmup=args.warmup,
            server_pid=server.pid,
            after_round=report_round,
        )

    medians = [(t, median_result(runs[t.name])) for t in targets]
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per target, {args.connections} connections, "
        f"1 thread, loopback; medians; pool max {args.pool_max}; LOG_LEVEL={args.log_level}"
    )
    print(format_table(medians))
    failed = sum(result.non_2xx + result.socket_errors for _, result in medians)
    # Each round measures both back to back, so a round's ratio is the fair comparison
    # when other work on the machine comes and goes.
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(
        f"postgres query / health throughput, median of the rounds' ratios "
        f"({', '.join(f'{r:.2f}' for r in ratios)}): {ratio:.2f} ({verdict} the {GOAL:.0%} goal)"
    )
    if failed:
        print(f"{failed} requests were not 2xx or hit socket errors", file=sys.stderr)
    write_json(
        args.json,
        "database",
        args.server,
        [result_row(t.name, r, medians[0][1]) for t, r in medians],
        goals=[goal_entry("postgres query / health", ratio, GOAL, ratios)],
        settings=f"{args.connections} connections, pool max {args.pool_max}",
    )
    return 0 if ratio >= GOAL and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
