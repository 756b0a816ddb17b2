"""Serve an app until SIGTERM/SIGINT, then stop within a budget.

The API (``quartstack serve``) and the worker (``quartstack worker``) share this loop,
under either server (:mod:`quartstack.servers`); what each does on the signal (drain,
then let requests or messages in hand finish) is theirs, passed as ``on_signal``.
The budget is a backstop only: the phases bound themselves, but on Python >= 3.12
Hypercorn waits for every connection to close without a timeout of its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from quartstack.lifecycle import lifecycle
from quartstack.servers import HttpServer

logger = logging.getLogger("quartstack.cli")


async def serve_until_signalled(
    app: Any,
    server: HttpServer,
    on_signal: Callable[[], Awaitable[None]],
    budget: float,
) -> bool:
    """Serve until signalled; False if the shutdown overran ``budget`` (plus 1 s)."""
    lifecycle(app).freeze_heap = True  # this process serves one app, for its lifetime
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        logger.info("shutdown signal received")
        await on_signal()

    serving = asyncio.create_task(server.serve(app, shutdown_trigger))
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait((serving, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if serving.done():
        serving.result()
        return True
    try:
        await asyncio.wait_for(serving, budget + 1)
    except TimeoutError:
        logger.error("shutdown overran its budget; stopping now", extra={"budget_s": budget})
        return False
    return True
