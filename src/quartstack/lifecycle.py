"""Process lifecycle: startup in the background, readiness, and the SIGTERM budget.

Startup work (the first Vault login, creating pools) runs as a background task
started when the app begins serving, so ``/health/startup`` can answer 503 while
it runs instead of the server not listening at all.

SIGTERM starts one budget of three consecutive phases, so the process is gone
within ``SHUTDOWN_DRAIN_SECONDS + SHUTDOWN_GRACE_SECONDS + SHUTDOWN_CLOSE_SECONDS``:

1. drain: readiness answers 503 while the server keeps accepting, so load
   balancers stop sending before the listening socket closes;
2. grace: the server stops accepting and in-flight requests may finish; a request
   still running when the grace ends is cancelled and answered with a 503 problem
   (``/problems/shutting-down``, ``Connection: close``) instead of being cut;
3. close: connections close and the backend clients stop (the Vault token is
   revoked), together bounded by the close phase.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from quart import Quart, current_app

from quartstack.heap import freeze_startup_heap
from quartstack.integrations.base import registry
from quartstack.metrics import HTTP_ERRORS, READINESS
from quartstack.readiness import BackendMonitor, readiness_checks
from quartstack.tracing import flush_tracing, tracing_enabled
from quartstack.web.context import current_g, current_request
from quartstack.web.problems import problem_body
from quartstack.web.request_steps import request_steps

if TYPE_CHECKING:
    from quartstack.settings import Settings

Scope = dict[str, Any]  # an ASGI scope: we add our own keys to it
Send = Callable[[dict[str, Any]], Awaitable[None]]

LIFECYCLE_KEY = "quartstack.lifecycle"
_CUT = "quartstack.cut"  # set in the ASGI scope of a request cancelled at the end of the grace
_REQUEST_ID = "quartstack.request_id"  # copied into the scope for the cut response
_ASGI_TASK = "quartstack.asgi_task"  # the server's task running the app for this request

logger = logging.getLogger("quartstack.lifecycle")


class Lifecycle:
    """Startup and shutdown state of one app, read by the probes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.startup_done = False
        self.draining = False
        #: HTTP requests inside the app now (counted at the ASGI boundary).
        self.in_flight = 0
        self.monitor: BackendMonitor | None = None
        self._app: Quart | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._startup_task: asyncio.Task[None] | None = None
        # handler task -> its ASGI scope, while the handler runs (before the response)
        self._handlers: dict[asyncio.Task[Any], Scope] = {}
        self._close_deadline: float | None = None
        # Set by the process that serves this app (not by tests that build many apps in
        # one process): freeze what startup left alive, see quartstack.heap.
        self.freeze_heap = False

    @property
    def started(self) -> bool:
        """Startup work finished and no backend holds startup back (e.g. Vault rejecting
        our credentials: such a pod should fail its startup probe, not serve)."""
        if not self.startup_done or self._app is None:
            return False
        return not any(b.startup_blocked for b in registry(self._app).backends.values())

    # --- startup ---------------------------------------------------------------------
    def begin_startup(self, app: Quart) -> None:
        self._app = app
        reg = registry(app)
        required = [b for name in reg.required if (b := reg.get(name)) is not None]
        monitor = BackendMonitor(
            required,
            interval=self.settings.readiness_interval_seconds,
            timeout=self.settings.health_timeout_seconds,
            threshold=self.settings.readiness_failure_threshold,
            checks=readiness_checks(app),
        )
        self.monitor = monitor
        self._startup_task = asyncio.create_task(self._run_startup(app, monitor), name="startup")
        self._tasks.append(self._startup_task)

    async def _run_startup(self, app: Quart, monitor: BackendMonitor) -> None:
        began = time.monotonic()
        timeout = self.settings.startup_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await registry(app).start_all()
        except TimeoutError:
            logger.error(
                "startup did not finish in time; serving degraded", extra={"timeout_s": timeout}
            )
        except Exception:
            logger.exception("startup failed; serving degraded")
        await monitor.refresh()  # readiness has a real answer once startup is done
        self.startup_done = True
        extra: dict[str, Any] = {"duration_ms": round((time.monotonic() - began) * 1000, 1)}
        if self.freeze_heap:
            extra["frozen_objects"] = freeze_startup_heap()
        logger.info("startup complete", extra=extra)
        if monitor.backends or monitor.check_results():
            self._tasks.append(asyncio.create_task(_keep_refreshing(monitor), name="readiness"))

    async def wait_started(self) -> None:
        if self._startup_task is not None:
            await asyncio.shield(self._startup_task)

    # --- shutdown --------------------------------------------------------------------
    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            READINESS.set(0)
            logger.info("draining: readiness is now 503")

    async def shut_down(self) -> None:
        """Phases 1 and 2 (drain, grace); when this returns the server stops accepting
        and every request has finished or been answered 503. Outside any request."""
        began = time.monotonic()
        self.begin_drain()
        await asyncio.sleep(self.settings.shutdown_drain_seconds)
        grace_end = time.monotonic() + self.settings.shutdown_grace_seconds
        while self.in_flight > 0 and time.monotonic() < grace_end:
            await asyncio.sleep(0.05)
        close_seconds = self.settings.shutdown_close_seconds
        self._close_deadline = time.monotonic() + close_seconds
        cut = self._cut_requests()
        # cancelled handlers unwind at once; give them a slice of the close phase
        settle_end = time.monotonic() + close_seconds / 4
        while self.in_flight > 0 and time.monotonic() < settle_end:
            await asyncio.sleep(0.01)
        logger.info(
            "drain finished",
            extra={
                "cut": cut,
                "in_flight": self.in_flight,
                "waited_s": round(time.monotonic() - began, 2),
            },
        )

    def _cut_requests(self) -> int:
        for task, scope in list(self._handlers.items()):
            scope[_CUT] = True
            task.cancel()  # Quart < 0.23 returns once its handler task is cancelled,
            asgi_task = scope.get(_ASGI_TASK)  # later ones wait for the client in a TaskGroup
            if asgi_task is not None:
                asgi_task.cancel()
        cut = len(self._handlers)
        if cut:
            logger.warning(
                "requests still running at the end of the grace: answering 503",
                extra={"requests": cut},
            )
        return cut

    def close_budget(self) -> float:
        """Seconds left for closing the backends (the whole close phase if the
        server stopped without :meth:`shut_down`, e.g. a test app)."""
        if self._close_deadline is None:
            return self.settings.shutdown_close_seconds
        return max(0.0, self._close_deadline - time.monotonic())

    async def stop(self) -> None:
        """Phase 3: stop the background tasks, then the backends, within the budget."""
        self.begin_drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._app is None:
            return
        budget = self.close_budget()
        try:
            async with asyncio.timeout(budget):
                await registry(self._app).stop_all()
        except TimeoutError:
            logger.error(
                "backends not closed within the shutdown budget",
                extra={"budget_s": round(budget, 2)},
            )
        if tracing_enabled():  # the spans of the last requests, within what is left
            await asyncio.to_thread(flush_tracing, self.close_budget())

    # --- request tracking ------------------------------------------------------------
    def track_handler(self, scope: Scope) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers[task] = scope

    def untrack_handler(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.pop(task, None)

    def wrap_asgi(self, inner: Any) -> Any:
        """The app's ASGI callable, counting requests and answering those cut at the
        end of the grace (a cancelled app sends no response, which Hypercorn would
        turn into an empty 500)."""

        async def asgi_app(scope: Scope, receive: Any, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            task = asyncio.current_task()
            scope[_ASGI_TASK] = task
            self.in_flight += 1
            try:
                try:
                    await inner(scope, receive, send)
                except asyncio.CancelledError:
                    if task is None or not scope.get(_CUT):
                        raise
                    task.uncancel()  # our own cut: answer instead
                if scope.get(_CUT):
                    await _send_cut_response(scope, send)
            finally:
                self.in_flight -= 1

        return asgi_app


async def _keep_refreshing(monitor: BackendMonitor) -> None:
    await asyncio.sleep(monitor.interval)  # the first round ran at startup
    await monitor.run()


async def _send_cut_response(scope: Scope, send: Send) -> None:
    request_id = str(scope.get(_REQUEST_ID, ""))
    logger.warning(
        "request cut at the end of the shutdown grace",
        extra={"path": scope.get("path", ""), "request_id": request_id, "status": 503},
    )
    detail = "the server is shutting down and could not finish this request in time; retry it"
    path = str(scope.get("path", ""))
    body = json.dumps(problem_body(503, "shutting-down", detail, path, request_id)).encode()
    HTTP_ERRORS.labels("shutting-down", "503").inc()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
    ]
    if request_id:  # validated by the observability layer: [A-Za-z0-9._-]
        headers.append((b"x-request-id", request_id.encode("ascii")))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def lifecycle(app: Quart | None = None) -> Lifecycle:
    target = app if app is not None else current_app
    state: Lifecycle = target.extensions[LIFECYCLE_KEY]
    return state


def init_lifecycle(app: Quart, settings: Settings) -> Lifecycle:
    state = Lifecycle(settings)
    app.extensions[LIFECYCLE_KEY] = state
    app.asgi_app = state.wrap_asgi(app.asgi_app)  # type: ignore[method-assign]

    @app.before_serving
    async def _start() -> None:
        state.begin_startup(app)

    def track() -> None:
        scope = cast(Scope, current_request().scope)
        scope[_REQUEST_ID] = current_g().get("request_id", "")
        state.track_handler(scope)

    def untrack(_exc: BaseException | None) -> None:
        state.untrack_handler()

    steps = request_steps(app)
    steps.before(track)
    steps.teardown(untrack)

    @app.after_serving
    async def _stop() -> None:
        await state.stop()

    return state
