"""``quartstack worker``: the consumer process, its probes on ``WORKER_PORT``.

SIGTERM (or SIGINT): the consumer stops taking messages and the events in hand
get ``SHUTDOWN_GRACE_SECONDS`` to finish (the rest are requeued); readiness turns
503; then the probe server stops and the backends close within
``SHUTDOWN_CLOSE_SECONDS``. Exit code 0 when all of it fit the budget.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.asyncio import serve

from quartstack.cli import hypercorn_config
from quartstack.lifecycle import lifecycle
from quartstack.settings import Settings
from quartstack.worker.app import consumer_of, create_worker_app

logger = logging.getLogger("quartstack.worker")


async def run_worker(settings: Settings, bind: str | None = None) -> bool:
    """Run until signalled; False if shutting down overran its budget."""
    app = create_worker_app(settings)
    config = hypercorn_config(settings, bind or f"{settings.host}:{settings.worker_port}", 1)
    config.graceful_timeout = min(1.0, settings.shutdown_close_seconds / 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        logger.info("shutdown signal received")
        lifecycle(app).begin_drain()
        await consumer_of(app).stop(settings.shutdown_grace_seconds)

    server = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown_trigger))
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait((server, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if server.done():
        server.result()
        return True
    budget = settings.shutdown_grace_seconds + settings.shutdown_close_seconds
    try:
        await asyncio.wait_for(server, budget + 1)
    except TimeoutError:
        logger.error("shutdown overran its budget; stopping now", extra={"budget_s": budget})
        return False
    return True
