"""``quartstack serve``: run the service under Hypercorn or uvicorn (``SERVER``).

One worker by default: with one worker the process owns SIGTERM and drains
in-flight requests before stopping (with several, each server's own supervisor
stops the workers and cuts what runs past its graceful timeout), so scale with
replicas rather than workers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from collections.abc import Callable

from quartstack import NAME, __version__
from quartstack.auth import cli as auth_cli
from quartstack.logging_setup import configure_logging
from quartstack.servers import SERVER_NAMES, HttpServer, hypercorn_config, make_server
from quartstack.serving import serve_until_signalled
from quartstack.settings import Settings, SettingsError, load_settings
from quartstack.signup import cli as signup_cli
from quartstack.tracing import configure_tracing, shutdown_tracing
from quartstack.worker import cli as worker_cli

__all__ = ["hypercorn_config", "main"]  # hypercorn_config: bench/bare_app.py

logger = logging.getLogger("quartstack.cli")

#: At exit, how long the last spans may take to export (most left with the close phase).
TRACING_EXIT_SECONDS = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quartstack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"quartstack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service")
    serve_cmd.add_argument("--bind", help="HOST:PORT to listen on (default from HOST and PORT)")
    serve_cmd.add_argument("--workers", type=int, help="worker processes (default 1)")
    add_server_option(serve_cmd)
    serve_cmd.add_argument("--no-uvloop", action="store_true", help="use the asyncio event loop")
    serve_cmd.add_argument(
        "--reload", action="store_true", help="restart when source files change (development)"
    )
    signup_cli.add_commands(commands)
    worker_cli.add_commands(commands)
    auth_cli.add_commands(commands)
    return parser


def add_server_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--server", choices=SERVER_NAMES, help="HTTP server (default from SERVER: hypercorn)"
    )


def server_missing(name: str) -> str | None:
    """Why the chosen server cannot run here, or None."""
    if name == "uvicorn" and not all(
        importlib.util.find_spec(module) for module in ("uvicorn", "httptools")
    ):
        return "SERVER=uvicorn needs the uvicorn extra: pip install 'quartstack[uvicorn]'"
    return None


def _uvloop_factory(disabled: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if disabled:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve_one(settings: Settings, server: HttpServer) -> bool:
    """Serve until SIGTERM/SIGINT, then shut down within the budget; False if the
    budget ran out and the server was stopped by force."""
    from quartstack.app import create_app
    from quartstack.lifecycle import lifecycle

    app = create_app(settings)
    budget = (
        settings.shutdown_drain_seconds
        + settings.shutdown_grace_seconds
        + settings.shutdown_close_seconds
    )
    return await serve_until_signalled(app, server, lifecycle(app).shut_down, budget)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"quartstack: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "server", None):
        settings = settings.model_copy(update={"server": args.server})
    if args.command in ("serve", "worker") and (missing := server_missing(settings.server)):
        print(f"quartstack: {missing}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    configure_tracing(f"{NAME}-worker" if args.command == "worker" else NAME)
    try:
        return _run(args, settings)
    finally:
        shutdown_tracing(TRACING_EXIT_SECONDS)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in signup_cli.COMMANDS:
        return signup_cli.run_command(args, settings)
    if args.command in worker_cli.COMMANDS:
        return worker_cli.run_command(args, settings)
    if args.command in auth_cli.COMMANDS:
        return auth_cli.run_command(args, settings)
    workers = args.workers if args.workers is not None else settings.workers
    server = make_server(settings, settings.server, args.bind, workers)
    loop_factory = _uvloop_factory(args.no_uvloop)
    logger.info(
        "starting",
        extra={
            "bind": [server.bind],
            "server": server.name,
            "workers": workers,
            "uvloop": loop_factory is not None,
            "version": __version__,
        },
    )
    if workers > 1 or args.reload:
        uvloop = loop_factory is not None
        server.serve_many("quartstack.asgi:app", uvloop=uvloop, reload=args.reload)
        return 0
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        clean = runner.run(_serve_one(settings, server))
    logger.info("stopped")
    return 0 if clean else 1
