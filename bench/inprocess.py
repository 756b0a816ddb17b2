"""In-process cost of one route: the app called as ASGI in a loop, no HTTP server, no wrk.

Settings come from the environment as for ``quartstack serve`` (``POSTGRES_HOST`` …;
an ``OTEL_EXPORTER_OTLP_ENDPOINT`` turns tracing on), the heap is frozen after startup
as the served process does, and ``--concurrency`` requests run at once on one event
loop. Three ways to read the cost:

- plain: CPU µs per request (noisy on a shared machine, like any clock);
- ``--profile``: cProfile of the loop (where the time goes, with profiler overhead);
- ``--count-instructions``: runs itself twice under valgrind's callgrind, with a small and
  a large request count, and prints the difference per request: the instructions one
  request costs, exact and repeatable whatever else the machine is doing. How the
  README's instruction counts were taken.

    .venv/bin/python -m bench.inprocess --path /health/
    .venv/bin/python -m bench.inprocess --path /health/ --bare --count-instructions
    RABBITMQ_HOST=127.0.0.1 RABBITMQ_USER=guest RABBITMQ_PASSWORD=guest \\
        .venv/bin/python -m bench.inprocess --method POST --body '{"event":"x"}' \\
        --path /examples/messaging/publish --query queue_name=bench-inprocess

``--ack-publishes`` answers every AMQP publish with an ack at once, unsent: the publish
route without the AMQP client's share of its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from bench.bare_app import create_bare_app

from quartstack.tracing import flush_tracing, tracing_enabled


def _ack_publishes_at_once() -> None:
    """Answer every AMQP publish with the broker's ack at once: no framing, no write, no
    wait. The route's cost without the AMQP client's share (how much of a publish is
    aiormq's, and what the rest of the route costs on its own)."""
    import aiormq.channel
    from pamqp.commands import Basic

    ack = Basic.Ack()

    async def basic_publish(self: Any, *args: Any, **kwargs: Any) -> Basic.Ack:
        return ack

    aiormq.channel.Channel.basic_publish = basic_publish  # type: ignore[method-assign]


def _app(bare: bool) -> Any:
    if bare:
        return create_bare_app()
    from quartstack.app import create_app
    from quartstack.logging_setup import configure_logging
    from quartstack.settings import load_settings
    from quartstack.tracing import configure_tracing

    settings = load_settings()
    configure_logging(settings.log_level, stream=open(os.devnull, "w"))  # noqa: SIM115
    configure_tracing()
    return create_app(settings)


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench-inprocess")]
    body = args.body.encode()
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": args.method,
        "scheme": "http",
        "path": args.path,
        "raw_path": args.path.encode(),
        "query_string": args.query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def _run(args: argparse.Namespace) -> None:
    app = _app(args.bare)
    template = _scope(args)
    body = args.body.encode()
    statuses: Counter[int] = Counter()

    async def one() -> None:
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(dict(template), receive, send)

    async def loop(count: int) -> None:
        async def worker(share: int) -> None:
            for _ in range(share):
                await one()

        await asyncio.gather(*(worker(count // args.concurrency) for _ in range(args.concurrency)))

    await app.startup()
    gc.collect()
    gc.freeze()  # as the served process does after startup (src/quartstack/heap.py)
    await loop(args.warmup)
    statuses.clear()
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    cpu = time.process_time()
    await loop(args.requests)
    # Every span of the run exported: otherwise the spans left below a full batch (up
    # to 511) are never encoded, a different share in each run.
    if not args.bare and tracing_enabled():
        flush_tracing(60)
    cpu = time.process_time() - cpu
    if profile is not None:
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    done = sum(statuses.values())
    print(f"statuses {dict(statuses)}; CPU {cpu / max(done, 1) * 1e6:.1f} µs per request")
    await app.shutdown()


def _instructions(args: argparse.Namespace, requests: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={directory}/out",
            sys.executable,
            "-m",
            "bench.inprocess",
            *_forwarded(args),
            "--requests",
            str(requests),
        ]
        run = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : ([\d,]+)", run.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _forwarded(args: argparse.Namespace) -> list[str]:
    out = ["--path", args.path, "--method", args.method, "--concurrency", str(args.concurrency)]
    out += ["--warmup", str(args.warmup)]
    if args.body:
        out += ["--body", args.body]
    if args.query:
        out += ["--query", args.query]
    if args.bare:
        out.append("--bare")
    if args.ack_publishes:
        out.append("--ack-publishes")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/health/")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="", help="a JSON body (sent as application/json)")
    parser.add_argument("--query", default="", help="the query string, without '?'")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bare", action="store_true", help="bench/bare_app.py instead")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--count-instructions", action="store_true")
    parser.add_argument(
        "--ack-publishes",
        action="store_true",
        help="AMQP publishes are acked at once, unsent (the route without aiormq's share)",
    )
    args = parser.parse_args()
    if args.ack_publishes:
        _ack_publishes_at_once()
    if args.count_instructions:
        small, large = 320, 1600
        difference = _instructions(args, large) - _instructions(args, small)
        print(f"{difference // (large - small):,} instructions per request ({args.path})")
        return 0
    try:
        import uvloop
    except ImportError:
        asyncio.run(_run(args))
    else:
        uvloop.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
