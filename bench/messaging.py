"""Benchmark: publishing with publisher confirms, against ``/health/`` in the same run.

Creates a vhost and user of its own on the machine's RabbitMQ (``rabbitmqctl``),
starts a real ``quartstack serve`` with them (the local-development environment
fallback for credentials, no Vault or Redis in the path), and drives it with wrk,
alternating for ``--rounds`` rounds: ``GET /health/`` (the baseline: the same HTTP
stack, no backend), then ``POST /examples/messaging/publish`` with a JSON body
(every request waits for the broker's confirm of a persistent message on a durable
queue). The goal from issue #18: publish >= 0.6 of ``/health/`` (median of the
rounds' ratios). Afterwards the messages in the queue are counted: there must be
at least as many as 200 responses (a request still in flight when wrk stops may be
queued without being counted by wrk).

Run from the repository root (needs ``wrk``: ``apt-get install -y wrk``):

    .venv/bin/python -m bench.messaging [--duration 10] [--connections 32] [--rounds 3]
        [--body-bytes 256] [--pool-size 10] [--server hypercorn|uvicorn] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
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

LUA_SCRIPT = Path(__file__).with_name("messaging_publish.lua")
GOAL = 0.6


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
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--body-bytes", type=int, default=256, help="approximate JSON body size")
    parser.add_argument("--pool-size", type=int, default=10, help="RABBITMQ_CHANNEL_POOL_SIZE")
    add_common_arguments(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2

    suffix = uuid.uuid4().hex[:8]
    vhost = user = f"qs-bench-{suffix}"
    password = secrets.token_hex(16)
    body = json.dumps({"event": "bench", "payload": "x" * max(0, args.body_bytes - 30)})
    queue = f"bench-{suffix}"
    baseline = Target("GET /health/", "GET", "/health/")
    publish = Target(
        "POST publish", "POST", f"/examples/messaging/publish?queue_name={queue}", LUA_SCRIPT
    )
    runs: dict[str, list[WrkResult]] = {baseline.name: [], publish.name: []}
    ratios: list[float] = []
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
            "LOG_LEVEL": "WARNING",
        }
        os.environ["BENCH_BODY"] = body  # read by messaging_publish.lua
        with BenchServer(env, server=args.server) as server:
            httpx.post(server.url + publish.path, json={"warm": True}).raise_for_status()
            before = queue_depth(vhost, queue)
            for round_number in range(args.rounds):
                rows = measure(
                    server.url,
                    [baseline, publish] if round_number % 2 == 0 else [publish, baseline],
                    duration=args.duration,
                    connections=args.connections,
                    warmup=args.warmup if round_number == 0 else 0,
                    server_pid=server.pid,
                )
                results = {target.name: result for target, result in rows}
                for name, result in results.items():
                    runs[name].append(result)
                ratios.append(
                    results[publish.name].requests_per_second
                    / results[baseline.name].requests_per_second
                )
                print(f"round {round_number + 1}: publish/health {ratios[-1]:.2f}", file=sys.stderr)
            queued = queue_depth(vhost, queue) - before
    finally:
        subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, check=False)
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, check=False)

    medians = [(t, median_result(runs[t.name])) for t in (baseline, publish)]
    ratio = statistics.median(ratios)
    print(
        f"wrk: {args.rounds} x {args.duration:g} s per target (alternating), "
        f"{args.connections} connections, 1 thread, loopback; body {len(body)} bytes; "
        f"{args.pool_size} channels; server {args.server}; medians"
    )
    print(format_table(medians))
    print(
        f"publish / health, median of the rounds' ratios ({', '.join(f'{r:.2f}' for r in ratios)})"
        f": {ratio:.2f} ({'meets' if ratio >= GOAL else 'MISSES'} the {GOAL} goal)"
    )
    confirmed = sum(r.requests - r.non_2xx for r in runs[publish.name])
    write_json(
        args.json,
        "messaging",
        args.server,
        [result_row(t.name, r, medians[0][1]) for t, r in medians],
        goals=[goal_entry("publish / health", ratio, GOAL, ratios)],
        settings=f"{args.connections} connections, {args.pool_size} confirm channels",
    )
    if queued < confirmed:
        print(
            f"FAIL: {confirmed} publishes answered 200 but {queued} messages are queued",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
