"""Serve an app with Hypercorn until SIGTERM/SIGINT, then stop within a budget.

The API (``quartstack serve``) and the worker (``quartstack worker``) share this loop;
what each does on the signal (drain, then let requests or messages in hand finish)
is theirs, passed as ``on_signal``. The budget is a backstop only: the phases bound
themselves, but on Python >= 3.12 Hypercorn waits for every connection to close
without a timeout of its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import Framework

logger = logging.getLogger("quartstack.cli")


async def serve_until_signalled(
    app: Framework,
    config: Config,
    on_signal: Callable[[], Awaitable[None]],
    budget: float,
    close_seconds: float,
) -> bool:
    """Serve until signalled; False if the shutdown overran ``budget`` (plus 1 s)."""
    # Requests (or messages) get their grace in ``on_signal``, before Hypercorn is told
    # to stop; what Hypercorn waits for after that comes out of the close phase.
    config.graceful_timeout = min(1.0, close_seconds / 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        logger.info("shutdown signal received")
        await on_signal()

    server = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown_trigger))
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait((server, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if server.done():
        server.result()
        return True
    try:
        await asyncio.wait_for(server, budget + 1)
    except TimeoutError:
        logger.error("shutdown overran its budget; stopping now", extra={"budget_s": budget})
        return False
    return True
