"""The baseline for bench/web.py: a bare Quart app answering ``GET /health/`` with the
same JSON as quartstack, served by Hypercorn with the same config and event loop
as ``quartstack serve`` (no web layer: no request id, logging, metrics, headers).

    .venv/bin/python -m bench.bare_app --bind 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from hypercorn.asyncio import serve
from quart import Quart

from quartstack.cli import _uvloop_factory, hypercorn_config
from quartstack.settings import load_settings


def create_bare_app() -> Quart:
    app = Quart("bare")

    @app.get("/health/")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _serve(bind: str) -> None:
    config = hypercorn_config(load_settings(), bind, 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(create_bare_app(), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_uvloop_factory(args.no_uvloop)) as runner:
        runner.run(_serve(args.bind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
