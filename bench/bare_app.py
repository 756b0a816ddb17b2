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
from quartstack.web.security import SecurityHeadersMiddleware


def create_bare_app(security_headers: bool = False) -> Quart:
    """``security_headers``: add the API contract's security headers (the same
    middleware as quartstack), to tell their HTTP-level cost from the rest."""
    app = Quart("bare")

    @app.get("/health/")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if security_headers:
        app.asgi_app = SecurityHeadersMiddleware(  # type: ignore[method-assign,assignment]
            app.asgi_app, debug=False
        )
    return app


async def _serve_uvicorn(bind: str, security_headers: bool) -> None:
    """The bare app on uvicorn (httptools, our event loop), for ``--server uvicorn``."""
    import uvicorn

    host, _, port = bind.rpartition(":")
    config = uvicorn.Config(
        create_bare_app(security_headers),
        host=host,
        port=int(port),
        loop="none",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    await uvicorn.Server(config).serve()


async def _serve(bind: str, security_headers: bool) -> None:
    config = hypercorn_config(load_settings(), bind, 1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(create_bare_app(security_headers), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--security-headers", action="store_true")
    parser.add_argument("--server", choices=("hypercorn", "uvicorn"), default="hypercorn")
    args = parser.parse_args()
    serve_with = _serve_uvicorn if args.server == "uvicorn" else _serve
    with asyncio.Runner(loop_factory=_uvloop_factory(args.no_uvloop)) as runner:
        runner.run(serve_with(args.bind, args.security_headers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
