"""Benchmark: publishing with publisher confirms, against ``/health/`` in the same run.

Creates a vhost and user of its own on the machine's RabbitMQ (``rabbitmqctl``),
starts a real ``quartstack serve`` with them (the local-development environment
fallback for credentials, no Vault or Redis in the path), and drives it with wrk:
first ``GET /health/`` (the baseline: the same HTTP stack, no backend), then
``POST /examples/messaging/publish`` with a JSON body (every request waits for the
broker's confirm of a persistent message on a durable queue). Throughput and
latency are reported as ratios against the baseline, because absolute numbers
drift between runs on shared machines. Afterwards the messages in the queue are
counted: there must be at least as many as 200 responses (a request still in
flight when wrk stops may be queued without being counted by wrk).

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.messaging [--duration 10] [--connections 32] [--body-bytes 256]
        [--pool-size 10]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from bench.wrkbench import run_wrk
from tests.support.process import ServiceProcess

LUA_SCRIPT = Path(__file__).with_name("messaging_publish.lua")


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def queue_depth(vhost: str, queue: str) -> int:
    for line in rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if name == queue:
            return int(count)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[32])
    parser.add_argument("--body-bytes", type=int, default=256, help="approximate JSON body size")
    parser.add_argument("--pool-size", type=int, default=10, help="RABBITMQ_CHANNEL_POOL_SIZE")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2

    suffix = uuid.uuid4().hex[:8]
    vhost = user = f"qs-bench-{suffix}"
    password = secrets.token_hex(16)
    body = json.dumps({"event": "bench", "payload": "x" * max(0, args.body_bytes - 30)})
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("add_user", user, password)
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        env = {
            "RABBITMQ_HOST": "127.0.0.1",
            "RABBITMQ_USER": user,
            "RABBITMQ_PASSWORD": password,
            "RABBITMQ_VHOST": vhost,
            "RABBITMQ_CHANNEL_POOL_SIZE": str(args.pool_size),
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
        }
        rows = []
        with ServiceProcess(env) as service:
            service.wait_started()
            for connections in args.connections:
                queue = f"bench-{connections}"
                url = f"{service.url}/examples/messaging/publish?queue_name={queue}"
                httpx.post(url, json={"warm": True}).raise_for_status()
                baseline = run_wrk(
                    service.url + "/health/", duration=args.duration, connections=connections
                )
                before = queue_depth(vhost, queue)
                result = run_wrk(
                    url,
                    duration=args.duration,
                    connections=connections,
                    script=LUA_SCRIPT,
                    env={"BENCH_BODY": body},
                )
                queued = queue_depth(vhost, queue) - before
                rows.append((connections, baseline, result, queued))
    finally:
        subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, check=False)
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, check=False)

    print(
        f"wrk: {args.duration} s per run, 1 thread, loopback; body {len(body)} bytes; "
        f"{args.pool_size} channels; "
        "ratios against GET /health/ in the same run"
    )
    print(
        f"{'route':<10} {'conns':>5} {'req/s':>8} {'vs health':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99 vs':>7} {'non-2xx':>8} {'queued':>8}"
    )
    failed = False
    for connections, baseline, result, queued in rows:
        for label, res, ratio, p99_ratio, extra in (
            ("health", baseline, 1.0, 1.0, ""),
            (
                "publish",
                result,
                result.requests_per_second / baseline.requests_per_second,
                result.p99 / baseline.p99,
                f"{queued:>8}",
            ),
        ):
            print(
                f"{label:<10} {connections:>5} {res.requests_per_second:>8.0f} {ratio:>9.2f} "
                f"{res.p50:>8.2f} {res.p99:>8.2f} {p99_ratio:>7.1f} "
                f"{res.non_2xx:>8} {extra}"
            )
        confirmed = result.requests - result.non_2xx
        if queued < confirmed:
            print(
                f"FAIL: {confirmed} publishes answered 200 but {queued} messages are queued",
                file=sys.stderr,
            )
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
