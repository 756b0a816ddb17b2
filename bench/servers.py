"""Benchmark: uvicorn beside Hypercorn, both servers in one run (issue #19).

Two real ``quartstack serve`` processes at the same time, identical except for the HTTP
server (Hypercorn, the default, and ``--server uvicorn``), with the same backends and the
full web layer on (production defaults, ``LOG_LEVEL=INFO``; rate limiting off as in every
bench):

- PostgreSQL: a role and database of this run's own on the machine's server, its
  credentials in Vault's KV secret ``postgres`` (as in production);
- Vault: a real OpenBao (tests/support/vault.py) holding that secret and the one the
  secret route reads;
- Redis: the machine's, with the response cache on (under a key prefix of this run's
  own), so ``GET /examples/vault/secret/{name}`` is answered from the cache.

Each round measures ``GET /health/``, ``GET /examples/database/postgres/query`` and the
cached ``GET /examples/vault/secret/{name}`` on both servers, the two servers back to
back per route; every other round the order is reversed, so uvicorn goes first. Per
route: the medians of req/s, p50/p95/p99 and server CPU µs per request of each server,
the median of the rounds' uvicorn/Hypercorn throughput ratios (with their range) and
Hypercorn's CPU per request over uvicorn's. Goals from issue #19: uvicorn >= 1.8x
Hypercorn on ``/health/``, >= 1.6x on the other two. A measurement: the exit code is 0
whether the goals are met or not (1 only if requests failed).

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.servers [--duration 10] [--connections 32] [--rounds 3]
        [--warmup 2] [--pool-max 10] [--log-level INFO] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench.wrkbench import (
    BenchServer,
    Target,
    WrkResult,
    alternating_rounds,
    format_table,
    goal_entry,
    median_result,
    result_row,
    reverse_on_odd_rounds,
    write_json,
)
from tests.support.databases import PostgresDatabase
from tests.support.vault import VaultTestServer

#: The server measured first in even rounds and the denominator of every ratio.
BASE, CANDIDATE = "hypercorn", "uvicorn"
SECRET_NAME = "bench-servers"


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    goal: float


ROUTES = (
    Route("/health/", "/health/", 1.8),
    Route("postgres query", "/examples/database/postgres/query", 1.6),
    Route("vault secret (cached)", f"/examples/vault/secret/{SECRET_NAME}", 1.6),
)


def _name(route: Route, server: str) -> str:
    return f"{route.name} on {server}"


@contextlib.contextmanager
def _backends(pool_max: int, log_level: str) -> Iterator[dict[str, str]]:
    """PostgreSQL account, OpenBao with its secrets, Redis: the servers' environment."""
    postgres = PostgresDatabase()
    db = postgres.create()
    try:
        with VaultTestServer(fault_proxy=False) as vault:
            vault.write_secret("postgres", db.secret())
            vault.write_secret(
                SECRET_NAME, {"user": "app", "password": "bench-password", "database": "app"}
            )
            yield {
                "VAULT_ADDR": vault.url,
                "VAULT_TOKEN": vault.root_token,
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_POOL_MAX": str(pool_max),
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": "6379",
                "REDIS_KEY_PREFIX": f"bench-servers-{uuid.uuid4().hex[:8]}",
                "RESPONSE_CACHE_ENABLED": "true",
                "LOG_LEVEL": log_level,
            }
    finally:
        postgres.drop()


def _check_routes(servers: dict[str, BenchServer]) -> None:
    """Every route answers 200 on both servers, and the secret route from the cache."""
    for server in servers.values():
        for route in ROUTES:
            response = httpx.get(server.url + route.path, timeout=10)
            response.raise_for_status()
        again = httpx.get(server.url + ROUTES[-1].path, timeout=10)
        if again.headers.get("X-Cache") != "HIT":
            raise RuntimeError(
                f"{server.server}: {ROUTES[-1].path} is not answered from the response cache "
                f"(X-Cache {again.headers.get('X-Cache')!r})"
            )


def _ratio_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2, help="seconds per target, round 1")
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results here (bench/all.py)"
    )
    args = parser.parse_args(argv)

    rps_ratios: dict[str, list[float]] = {route.name: [] for route in ROUTES}
    cpu_ratios: dict[str, list[float]] = {route.name: [] for route in ROUTES}

    def report_round(number: int, by_name: dict[str, WrkResult]) -> None:
        for route in ROUTES:
            base, candidate = by_name[_name(route, BASE)], by_name[_name(route, CANDIDATE)]
            rps_ratios[route.name].append(candidate.requests_per_second / base.requests_per_second)
            if base.cpu_us_per_request and candidate.cpu_us_per_request:
                cpu_ratios[route.name].append(
                    base.cpu_us_per_request / candidate.cpu_us_per_request
                )
        summary = "; ".join(f"{name} {values[-1]:.2f}" for name, values in rps_ratios.items())
        first = BASE if number % 2 == 0 else CANDIDATE
        print(f"round {number + 1} ({first} first): {CANDIDATE}/{BASE} {summary}", file=sys.stderr)

    with contextlib.ExitStack() as stack:
        env = stack.enter_context(_backends(args.pool_max, args.log_level))
        servers = {
            server: stack.enter_context(BenchServer(env, server=server))
            for server in (BASE, CANDIDATE)
        }
        _check_routes(servers)
        targets = [
            Target(
                _name(route, server),
                "GET",
                servers[server].url + route.path,
                pid=servers[server].pid,
            )
            for route in ROUTES
            for server in (BASE, CANDIDATE)
        ]
        runs, _ = alternating_rounds(
            servers[BASE].url,
            targets,
            rounds=args.rounds,
            duration=args.duration,
            connections=args.connections,
            warmup=args.warmup,
            order=reverse_on_odd_rounds,  # per route, the other server goes first
            after_round=report_round,
        )

    print(
        f"wrk: {args.rounds} x {args.duration:g} s per target, {args.connections} connections, "
        f"1 thread, loopback; both servers running at once, same backends (PostgreSQL, "
        f"OpenBao, Redis response cache); LOG_LEVEL={args.log_level}; medians; "
        f"ratio = {CANDIDATE}/{BASE} req/s, cpu ratio = {BASE}/{CANDIDATE} CPU per request"
    )
    rows: list[dict[str, object]] = []
    goals: list[dict[str, object]] = []
    summaries: list[str] = []
    failed = 0
    for route in ROUTES:
        base = median_result(runs[_name(route, BASE)])
        candidate = median_result(runs[_name(route, CANDIDATE)])
        failed += sum(r.non_2xx + r.socket_errors for r in (base, candidate))
        print(f"\nGET {route.path}")
        print(format_table([(Target(BASE), base), (Target(CANDIDATE), candidate)]))
        rows += [
            {**result_row(route.name, base), "server": BASE},
            {**result_row(route.name, candidate, base), "server": CANDIDATE},
        ]
        ratios = rps_ratios[route.name]
        ratio = statistics.median(ratios)
        goals.append(
            {
                **goal_entry(f"{CANDIDATE} / {BASE} {route.name}", ratio, route.goal, ratios),
                "server": CANDIDATE,
            }
        )
        cpu = cpu_ratios[route.name]
        cpu_text = (
            f"; CPU per request {BASE}/{CANDIDATE} {statistics.median(cpu):.2f} "
            f"({_ratio_text(cpu)})"
            if cpu
            else ""
        )
        verdict = "meets" if ratio >= route.goal else "MISSES"
        summaries.append(
            f"{route.name}: {CANDIDATE}/{BASE} throughput, median of the rounds' ratios "
            f"({_ratio_text(ratios)}, range {min(ratios):.2f}-{max(ratios):.2f}): {ratio:.2f} "
            f"({verdict} the {route.goal:g}x goal){cpu_text}"
        )
    print()
    for line in summaries:
        print(line)
    if failed:
        print(f"{failed} requests were not 2xx or hit socket errors", file=sys.stderr)
    write_json(
        args.json,
        "servers",
        None,
        rows,
        goals=goals,
        settings=(
            f"{args.connections} connections, PostgreSQL + OpenBao + "
            f"Redis response cache, LOG_LEVEL={args.log_level}"
        ),
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
