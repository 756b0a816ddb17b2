"""``quartstack serve``: run the service under Hypercorn.

One worker by default: with one worker the process owns SIGTERM and drains
in-flight requests before stopping (Hypercorn's multi-worker mode cuts them),
so scale with replicas rather than workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

from hypercorn.config import Config

from quartstack import __version__
from quartstack.auth import cli as auth_cli
from quartstack.logging_setup import configure_logging
from quartstack.server_fixes import MAX_REQUEST_HEAD_BYTES, apply_hypercorn_fixes
from quartstack.serving import serve_until_signalled
from quartstack.settings import Settings, SettingsError, load_settings
from quartstack.signup import cli as signup_cli
from quartstack.worker import cli as worker_cli

logger = logging.getLogger("quartstack.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quartstack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"quartstack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the HTTP service under Hypercorn")
    serve_cmd.add_argument("--bind", help="HOST:PORT to listen on (default from HOST and PORT)")
    serve_cmd.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve_cmd.add_argument("--no-uvloop", action="store_true", help="use the asyncio event loop")
    serve_cmd.add_argument(
        "--reload", action="store_true", help="restart when source files change (development)"
    )
    signup_cli.add_commands(commands)
    worker_cli.add_commands(commands)
    auth_cli.add_commands(commands)
    return parser


def hypercorn_config(settings: Settings, bind: str | None, workers: int) -> Config:
    config = Config()
    config.bind = [bind or f"{settings.host}:{settings.port}"]
    config.workers = workers
    config.graceful_timeout = settings.shutdown_grace_seconds  # several workers: Hypercorn's own
    config.shutdown_timeout = settings.shutdown_close_seconds + 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.h11_max_incomplete_size = MAX_REQUEST_HEAD_BYTES
    config.keep_alive_timeout = 75
    apply_hypercorn_fixes(settings.max_body_bytes)  # closed connections, 100-continue
    return config


def _uvloop_factory(disabled: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if disabled:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve_one(settings: Settings, config: Config) -> bool:
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
    return await serve_until_signalled(
        app, config, lifecycle(app).shut_down, budget, settings.shutdown_close_seconds
    )


def _serve_many(config: Config) -> None:
    from hypercorn.run import run

    config.application_path = "quartstack.asgi:app"
    run(config)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"quartstack: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command in signup_cli.COMMANDS:
        return signup_cli.run_command(args, settings)
    if args.command in worker_cli.COMMANDS:
        return worker_cli.run_command(args, settings)
    if args.command in auth_cli.COMMANDS:
        return auth_cli.run_command(args, settings)
    workers = args.workers if args.workers is not None else settings.workers
    config = hypercorn_config(settings, args.bind, workers)
    loop_factory = _uvloop_factory(args.no_uvloop)
    logger.info(
        "starting",
        extra={
            "bind": config.bind,
            "workers": workers,
            "uvloop": loop_factory is not None,
            "version": __version__,
        },
    )
    if args.reload:
        config.use_reloader = True
    if workers > 1 or args.reload:
        if loop_factory is not None:
            config.worker_class = "uvloop"
        _serve_many(config)
        return 0
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        clean = runner.run(_serve_one(settings, config))
    logger.info("stopped")
    return 0 if clean else 1
