"""The worker's subcommands: ``quartstack worker`` and ``quartstack dlq list|replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from quartstack.settings import Settings

COMMANDS = frozenset({"worker", "dlq"})


def add_commands(commands: Any) -> None:
    worker = commands.add_parser("worker", help="consume the signup events into the projections")
    worker.add_argument("--bind", help="HOST:PORT of the probes (default HOST and WORKER_PORT)")
    worker.add_argument(
        "--server",
        choices=("hypercorn", "uvicorn"),
        help="HTTP server of the probes (default from SERVER: hypercorn)",
    )
    dlq = commands.add_parser("dlq", help="inspect or replay the worker's dead-letter queue")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    listing = actions.add_parser("list", help="print the dead letters (one JSON object a line)")
    listing.add_argument("--limit", type=int, default=100)
    replay = actions.add_parser("replay", help="publish dead letters to the events exchange again")
    replay.add_argument("--limit", type=int, default=1000)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    from quartstack.worker.app import WorkerNotConfigured

    try:
        if args.command == "worker":
            from quartstack.worker.process import run_worker

            return 0 if asyncio.run(run_worker(settings, args.bind)) else 1
        from quartstack.worker import dlq

        if args.dlq_action == "list":
            for letter in asyncio.run(dlq.list_letters(settings, args.limit)):
                print(json.dumps(letter, default=str))
            return 0
        replayed = asyncio.run(dlq.replay(settings, args.limit))
        print(f"replayed {replayed} message(s)")
        return 0
    except WorkerNotConfigured as exc:
        print(f"quartstack: {exc}", file=sys.stderr)
        return 2
