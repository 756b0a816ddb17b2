"""The two HTTP servers ``quartstack serve`` can run the app under: Hypercorn or uvicorn.

Both are configured for the same behaviour (README: Limits, Shutdown): no ``Server``
banner, a ``Date`` header, keep-alive for 75 s of idleness, a 16 KiB request head,
our access log only, client addresses from ``TRUSTED_PROXIES`` only (never the
server's own proxy-header handling). Both serve until a *shutdown trigger* returns:
the lifecycle's drain and grace run inside it, then the server stops accepting,
closes its connections and runs the app's shutdown (closing the backends).

Hypercorn speaks HTTP/2 and terminates TLS in-process; uvicorn (httptools and
uvloop) speaks HTTP/1.1 only and serves about twice the requests per core.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from quartstack.server_fixes import (
    MAX_REQUEST_HEAD_BYTES,
    apply_hypercorn_fixes,
    set_max_body_bytes,
)

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig
    from uvicorn import Config as UvicornConfig

    from quartstack.settings import Settings

ServerName = Literal["hypercorn", "uvicorn"]
SERVER_NAMES: tuple[ServerName, ...] = ("hypercorn", "uvicorn")
ShutdownTrigger = Callable[[], Awaitable[None]]

#: Idle seconds before a keep-alive connection is closed, on both servers.
KEEP_ALIVE_SECONDS = 75

logger = logging.getLogger("quartstack.server")


class HttpServer(Protocol):
    """One configured server: serve an app in this process, or several worker processes."""

    name: ServerName
    bind: str

    async def serve(self, app: Any, shutdown_trigger: ShutdownTrigger) -> None:
        """Serve ``app`` until ``shutdown_trigger`` returns, then stop and return."""

    def serve_many(self, app_path: str, *, uvloop: bool, reload: bool) -> None:
        """Serve ``app_path`` in worker processes under the server's own supervisor."""


def hypercorn_config(settings: Settings, bind: str | None, workers: int) -> HypercornConfig:
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind or f"{settings.host}:{settings.port}"]
    config.workers = workers
    config.graceful_timeout = settings.shutdown_grace_seconds  # several workers: Hypercorn's own
    config.shutdown_timeout = settings.shutdown_close_seconds + 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.h11_max_incomplete_size = MAX_REQUEST_HEAD_BYTES
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    apply_hypercorn_fixes(settings.max_body_bytes)  # closed connections, 100-continue
    return config


class HypercornServer:
    name: ServerName = "hypercorn"

    def __init__(self, settings: Settings, bind: str | None, workers: int) -> None:
        self.config = hypercorn_config(settings, bind, workers)
        self.bind = self.config.bind[0]
        # Requests get their grace inside the trigger, before Hypercorn is told to stop;
        # what Hypercorn waits for after that comes out of the close phase.
        self._single_graceful = min(1.0, settings.shutdown_close_seconds / 4)

    async def serve(self, app: Any, shutdown_trigger: ShutdownTrigger) -> None:
        from hypercorn.asyncio import serve

        self.config.graceful_timeout = self._single_graceful
        await serve(app, self.config, shutdown_trigger=shutdown_trigger)

    def serve_many(self, app_path: str, *, uvloop: bool, reload: bool) -> None:
        from hypercorn.run import run

        self.config.application_path = app_path
        self.config.use_reloader = reload
        if uvloop:
            self.config.worker_class = "uvloop"
        run(self.config)


def _split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def _drop_color_message(record: logging.LogRecord) -> bool:
    """uvicorn adds an ANSI-coloured copy of its message; our JSON lines need only one."""
    record.__dict__.pop("color_message", None)
    return True


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn with httptools, our protocol limits (:mod:`quartstack.uvicorn_protocol`),
    and none of its own logging, banner or proxy-header handling."""
    from quartstack.uvicorn_protocol import LimitedHttpToolsProtocol

    set_max_body_bytes(settings.max_body_bytes)  # no 100 Continue for a body over it
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(_drop_color_message)
    return {
        "http": LimitedHttpToolsProtocol,
        "ws": "none",
        "lifespan": "on",
        "interface": "asgi3",
        "log_config": None,  # our JSON logging (the root logger) gets uvicorn's records
        "access_log": False,  # the web layer writes the access log
        "server_header": False,
        "date_header": True,
        "proxy_headers": False,  # TRUSTED_PROXIES is the only source of client addresses
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # several workers: uvicorn's own shutdown waits this long for requests
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_seconds)),
    }


def uvicorn_config(
    settings: Settings, bind: str | None, workers: int, app: Any = "quartstack.asgi:app"
) -> UvicornConfig:
    import uvicorn

    host, port = _split_bind(bind or f"{settings.host}:{settings.port}")
    return uvicorn.Config(app, host=host, port=port, workers=workers, **_uvicorn_options(settings))


class UvicornServer:
    name: ServerName = "uvicorn"

    def __init__(self, settings: Settings, bind: str | None, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.bind = bind or f"{settings.host}:{settings.port}"

    async def serve(self, app: Any, shutdown_trigger: ShutdownTrigger) -> None:
        import asyncio

        import uvicorn

        config = uvicorn_config(self.settings, self.bind, 1, app)
        # After the trigger, what uvicorn waits for comes out of the close phase.
        config.timeout_graceful_shutdown = min(1.0, self.settings.shutdown_close_seconds / 4)  # type: ignore[assignment]

        class Server(uvicorn.Server):
            def capture_signals(self) -> Any:  # the lifecycle owns SIGTERM/SIGINT
                import contextlib

                return contextlib.nullcontext()

        server = Server(config)

        async def stop_when_triggered() -> None:
            await shutdown_trigger()
            server.should_exit = True

        trigger = asyncio.create_task(stop_when_triggered())
        try:
            await server.serve()
        finally:
            trigger.cancel()
        if not server.started:
            raise RuntimeError("uvicorn did not start (see the log above)")

    def serve_many(self, app_path: str, *, uvloop: bool, reload: bool) -> None:
        import uvicorn

        host, port = _split_bind(self.bind)
        options = _uvicorn_options(self.settings)
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            # uvicorn >= 0.5x restarts a worker that is not up within 5 s; building the
            # app takes longer than that on a busy node
            options["timeout_worker_healthcheck"] = 30
        uvicorn.run(
            app_path,
            host=host,
            port=port,
            workers=self.workers,
            reload=reload,
            loop="uvloop" if uvloop else "asyncio",
            **options,
        )


def make_server(settings: Settings, name: ServerName, bind: str | None, workers: int) -> HttpServer:
    if name == "uvicorn":
        return UvicornServer(settings, bind, workers)
    return HypercornServer(settings, bind, workers)
