"""``quartstack worker``: the consumer process, its probes on ``WORKER_PORT``.

SIGTERM (or SIGINT): the consumer stops taking messages and the events in hand
get ``SHUTDOWN_GRACE_SECONDS`` to finish (the rest are requeued); readiness turns
503; then the probe server (Hypercorn or uvicorn, as ``SERVER`` says) stops and the
backends close within ``SHUTDOWN_CLOSE_SECONDS``. Exit code 0 when all of it fit
the budget.
"""

from __future__ import annotations

import logging

from quartstack.lifecycle import lifecycle
from quartstack.servers import ServerName, make_server
from quartstack.serving import serve_until_signalled
from quartstack.settings import Settings
from quartstack.worker.app import consumer_of, create_worker_app

logger = logging.getLogger("quartstack.worker")


async def run_worker(
    settings: Settings, bind: str | None = None, server: ServerName | None = None
) -> bool:
    """Run until signalled; False if shutting down overran its budget."""
    app = create_worker_app(settings)
    http = make_server(
        settings, server or settings.server, bind or f"{settings.host}:{settings.worker_port}", 1
    )

    async def on_signal() -> None:
        lifecycle(app).begin_drain()
        await consumer_of(app).stop(settings.shutdown_grace_seconds)

    budget = settings.shutdown_grace_seconds + settings.shutdown_close_seconds
    return await serve_until_signalled(app, http, on_signal, budget)
