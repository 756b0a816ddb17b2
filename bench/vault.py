"""Benchmark: ``/examples/vault/secret/{service}`` with the in-process KV cache warm vs off.

Starts an OpenBao server (tests/support/vault.py) and two real ``quartstack serve`` processes (one
after the other: cache TTL 300 s, then 0), drives each with wrk, and reports
throughput and latency as ratios against ``/health/live`` measured in the same
process in the same run (absolute numbers drift between runs on shared machines).
It also counts the KV reads OpenBao served during each run: with a
warm cache the route must make no Vault round trip at all.

The shared Redis response cache and rate limiting are switched off so that only
the Vault client's own cache is measured.

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.vault [--duration 10] [--connections 1 32] [--threads 1]

With one connection every uncached request is one Vault round trip; with many,
concurrent misses for the same secret coalesce into one Vault read (single
flight), so the uncached figure there already includes that saving.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import httpx
from bench.wrkbench import WrkResult, run_wrk
from tests.support.process import ServiceProcess
from tests.support.vault import VaultTestServer

SECRET_NAME = "bench-postgres"
ROUTE = f"/examples/vault/secret/{SECRET_NAME}"
KV_PATH = f"/v1/secret/data/{SECRET_NAME}"
RUNS = (("cached (TTL 300 s)", 300), ("uncached (TTL 0)", 0))


def measure(
    vault: VaultTestServer, cache_ttl: int, args: argparse.Namespace
) -> list[tuple[int, WrkResult, WrkResult, int]]:
    """Per connection count: baseline, route result, KV reads served by Vault."""
    env = {
        "VAULT_ADDR": vault.url,
        "VAULT_TOKEN": vault.root_token,
        "VAULT_CACHE_TTL_SECONDS": str(cache_ttl),
        "RESPONSE_CACHE_ENABLED": "false",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    results = []
    with ServiceProcess(env) as service:
        service.wait_started()
        httpx.get(service.url + ROUTE).raise_for_status()  # warm the cache (if any)
        for connections in args.connections:
            baseline = run_wrk(
                service.url + "/health/live", duration=args.duration, connections=connections
            )
            vault.request_counts(reset=True)
            result = run_wrk(
                service.url + ROUTE,
                duration=args.duration,
                connections=connections,
                threads=args.threads,
            )
            kv_reads = vault.request_counts().get(KV_PATH, 0)
            results.append((connections, baseline, result, kv_reads))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2

    with VaultTestServer() as vault:
        vault.write_secret(
            SECRET_NAME, {"user": "app", "password": "bench-password", "database": "app"}
        )
        runs = {label: measure(vault, ttl, args) for label, ttl in RUNS}

    print(f"wrk: {args.duration} s per run, loopback; ratios against /health/live in the same run")
    print(
        f"{'run':<20} {'conns':>5} {'req/s':>8} {'vs live':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non-2xx':>8} {'KV reads':>9}"
    )
    for label, rows in runs.items():
        for connections, baseline, result, kv_reads in rows:
            print(
                f"{label:<20} {connections:>5} {result.requests_per_second:>8.0f} "
                f"{result.requests_per_second / baseline.requests_per_second:>8.2f} "
                f"{result.p50:>8.2f} "
                f"{result.p99:>8.2f} "
                f"{result.non_2xx:>8} {kv_reads:>9}"
            )
    cached, uncached = runs[RUNS[0][0]], runs[RUNS[1][0]]
    for (connections, _, warm, _), (_, _, cold, _) in zip(cached, uncached, strict=True):
        ratio = warm.requests_per_second / cold.requests_per_second
        print(f"{connections} connection(s): cached / uncached throughput {ratio:.2f}x")
    if any(kv_reads for *_, kv_reads in cached):
        print("FAIL: the warm-cache run made Vault round trips", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
