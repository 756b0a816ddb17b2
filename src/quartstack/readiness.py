"""Backend health checks, and the last-known state of the required backends.

Readiness must not fan out to every backend on every probe: a blip in one check
would take every pod out of the Service at the same moment. Instead a background
task re-checks the ``REQUIRED_BACKENDS`` every ``READINESS_INTERVAL_SECONDS`` and
readiness reads the result. Hysteresis: a backend that has been up turns "down"
only after ``READINESS_FAILURE_THRESHOLD`` consecutive failed checks, and one
successful check turns it "up" again. Until its first successful check a backend
counts as down, so a pod whose required backend is unreachable never becomes ready.

A feature can add a named check of its own (:func:`add_readiness_check`: an async
function returning ``"ok"`` or the reason it is not ready, e.g. "schema too old"); it
runs in the same background round, bounded by the same timeout, and readiness reports
its last answer under its name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from quart import Quart

from quartstack.integrations.base import Backend
from quartstack.metrics import BACKEND_UP
from quartstack.resilience import BackendError

logger = logging.getLogger("quartstack.health")

READINESS_CHECKS_KEY = "quartstack.readiness_checks"

ReadinessCheck = Callable[[], Awaitable[str]]


def add_readiness_check(app: Quart, name: str, check: ReadinessCheck) -> None:
    """Register a readiness condition beyond "the required backends answer"."""
    app.extensions.setdefault(READINESS_CHECKS_KEY, {})[name] = check


def readiness_checks(app: Quart) -> dict[str, ReadinessCheck]:
    checks: dict[str, ReadinessCheck] = app.extensions.get(READINESS_CHECKS_KEY, {})
    return checks


async def run_check(check: ReadinessCheck, timeout: float) -> str:
    """One registered check's answer, bounded by ``timeout``; never raises."""
    try:
        async with asyncio.timeout(timeout):
            return await check()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except Exception as exc:  # a probe reports, it does not crash
        logger.warning("readiness check raised", exc_info=True)
        return f"check failed: {type(exc).__name__}"


async def check_backend(backend: Backend, timeout: float) -> tuple[bool, dict[str, Any]]:
    """Run one health check bounded by ``timeout``; never raises."""
    try:
        async with asyncio.timeout(timeout):
            body = await backend.health()
    except TimeoutError:
        body, healthy = {"status": "unhealthy", "error": f"no answer within {timeout:g} s"}, False
        logger.debug("health check timed out", extra={"backend": backend.name})
    except BackendError as exc:
        body, healthy = {"status": "unhealthy", "error": str(exc)}, False
        logger.debug("health check failed", extra={"backend": backend.name}, exc_info=True)
    except Exception as exc:  # a health check must report, not crash the probe
        body, healthy = {"status": "unhealthy", "error": type(exc).__name__}, False
        logger.warning("health check raised", extra={"backend": backend.name}, exc_info=True)
    else:
        body = {"status": "healthy", **body}
        healthy = True
    BACKEND_UP.labels(backend.name).set(1 if healthy else 0)
    return healthy, body


class _State:
    __slots__ = ("error", "failures", "up")

    def __init__(self) -> None:
        self.up = False
        self.failures = 0
        self.error = "not checked yet"


class BackendMonitor:
    """Keeps the last-known health of some backends, refreshed by :meth:`run`."""

    def __init__(
        self,
        backends: Iterable[Backend],
        *,
        interval: float,
        timeout: float,
        threshold: int,
        checks: Mapping[str, ReadinessCheck] | None = None,
    ) -> None:
        self.backends = list(backends)
        self.interval = interval
        self.timeout = timeout
        self.threshold = threshold
        self._states = {backend.name: _State() for backend in self.backends}
        self._checks = dict(checks or {})
        self._check_results = dict.fromkeys(self._checks, "not checked yet")

    def check_results(self) -> dict[str, str]:
        """The last answer of every registered readiness check."""
        return dict(self._check_results)

    def status(self, name: str) -> str:
        """``ok``, or why the backend counts as down."""
        state = self._states.get(name)
        if state is None:
            return "not configured"
        return "ok" if state.up else f"unhealthy: {state.error}"

    async def refresh(self) -> None:
        """Check every backend once, concurrently, and apply the hysteresis."""
        results, answers = await asyncio.gather(
            asyncio.gather(*(check_backend(b, self.timeout) for b in self.backends)),
            asyncio.gather(*(run_check(check, self.timeout) for check in self._checks.values())),
        )
        for backend, (healthy, body) in zip(self.backends, results, strict=True):
            self._record(backend.name, healthy, str(body.get("error", "unknown")))
        self._check_results = dict(zip(self._checks, answers, strict=True))

    def _record(self, name: str, healthy: bool, error: str) -> None:
        state = self._states[name]
        if healthy:
            if not state.up:
                logger.info("required backend is up", extra={"backend": name})
            state.up, state.failures = True, 0
            return
        state.failures += 1
        state.error = error
        if state.up and state.failures >= self.threshold:
            state.up = False
            logger.warning(
                "required backend is down",
                extra={"backend": name, "failures": state.failures, "reason": error},
            )

    async def run(self) -> None:
        """Refresh forever, one round every ``interval`` (a slow round delays the next)."""
        while True:
            try:
                await self.refresh()
            except Exception:  # never let one bad round stop the monitor
                logger.exception("readiness refresh failed")
            await asyncio.sleep(self.interval)
