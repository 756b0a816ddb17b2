"""Process lifecycle: startup in the background, readiness, and the SIGTERM drain.

Startup work (the first Vault login, creating pools) runs as a background task
started when the app begins serving, so ``/health/startup`` can answer 503 while
it runs instead of the server not listening at all. On SIGTERM readiness turns
503 at once; the server keeps answering until in-flight requests are done (or the
grace runs out), then stops.
"""

from __future__ import annotations

import asyncio
import logging
import time

from quart import Quart, current_app

from quartstack.integrations.base import registry
from quartstack.metrics import HTTP_IN_PROGRESS, READINESS

LIFECYCLE_KEY = "quartstack.lifecycle"

logger = logging.getLogger("quartstack.lifecycle")


class Lifecycle:
    """Startup and shutdown state of one app, read by the probes."""

    def __init__(self, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self.startup_done = False
        self.draining = False
        self._app: Quart | None = None
        self._startup_task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        """Startup work finished and no backend holds startup back (e.g. Vault rejecting
        our credentials: such a pod should fail its startup probe, not serve)."""
        if not self.startup_done or self._app is None:
            return False
        return not any(b.startup_blocked for b in registry(self._app).backends.values())

    def begin_startup(self, app: Quart) -> None:
        self._app = app
        self._startup_task = asyncio.create_task(self._run_startup(app), name="startup")

    async def _run_startup(self, app: Quart) -> None:
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.startup_timeout):
                await registry(app).start_all()
        except TimeoutError:
            logger.error(
                "startup did not finish in time; serving degraded",
                extra={"timeout_s": self.startup_timeout},
            )
        except Exception:
            logger.exception("startup failed; serving degraded")
        self.startup_done = True
        logger.info(
            "startup complete", extra={"duration_ms": round((time.monotonic() - began) * 1000, 1)}
        )

    async def wait_started(self) -> None:
        if self._startup_task is not None:
            await asyncio.shield(self._startup_task)

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            READINESS.set(0)
            logger.info("draining: readiness is now 503")

    async def stop(self) -> None:
        if self._startup_task is not None and not self._startup_task.done():
            self._startup_task.cancel()
            await asyncio.gather(self._startup_task, return_exceptions=True)


def lifecycle(app: Quart | None = None) -> Lifecycle:
    target = app if app is not None else current_app
    state: Lifecycle = target.extensions[LIFECYCLE_KEY]
    return state


def in_flight_requests() -> float:
    """Requests being handled now, from the ``http_requests_in_progress`` gauge."""
    total = 0.0
    for metric in HTTP_IN_PROGRESS.collect():
        for sample in metric.samples:
            total += sample.value
    return total


async def drain(app: Quart, *, minimum: float, grace: float) -> None:
    """Wait until no request is in flight (at least ``minimum``, at most ``grace`` s).

    The caller counts itself out: this runs outside any request.
    """
    lifecycle(app).begin_drain()
    began = time.monotonic()
    await asyncio.sleep(min(minimum, grace))
    while time.monotonic() - began < grace and in_flight_requests() > 0:
        await asyncio.sleep(0.05)
    logger.info(
        "drain finished",
        extra={"in_flight": in_flight_requests(), "waited_s": round(time.monotonic() - began, 2)},
    )


def init_lifecycle(app: Quart, startup_timeout: float) -> Lifecycle:
    state = Lifecycle(startup_timeout)
    app.extensions[LIFECYCLE_KEY] = state

    @app.before_serving
    async def _start() -> None:
        state.begin_startup(app)

    @app.after_serving
    async def _stop() -> None:
        state.begin_drain()
        await state.stop()
        await registry(app).stop_all()

    return state
