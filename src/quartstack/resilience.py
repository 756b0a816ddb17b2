"""Circuit breakers, timeouts and retries shared by every backend client.

Every backend call goes through :meth:`BackendGuard.call`: the circuit breaker
counts the outcome, a timeout bounds the call *inside* the breaker (an outer
cancellation is a ``BaseException`` the breaker would count as success), and the
duration lands in ``backend_call_duration_seconds``. Failures leave as
:class:`BackendUnavailable` (503) or :class:`BackendTimeout` (504), which the web
layer renders as problem+json. Idempotent reads may retry connection errors
(:class:`RetryPolicy`) inside that one timeout.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker

from quartstack.metrics import (
    BACKEND_CALL_DURATION,
    BACKEND_CALL_RETRIES,
    BACKEND_UP,
    CIRCUIT_CLOSED,
    CIRCUIT_FAILURES,
    CIRCUIT_HALF_OPENED,
    CIRCUIT_OPENED,
    CIRCUIT_STATE,
)
from quartstack.tracing import state as tracing_state
from quartstack.tracing.client import ClientSpan, SpanSpecs, default_attributes
from quartstack.tracing.client import wanted as wanted_span

T = TypeVar("T")

_STATE_VALUES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1, STATE_OPEN: 2}


class BackendError(Exception):
    """A backend could not serve a request; rendered as a problem by the web layer.

    The message is written by us and never contains driver text, which may hold
    credentials; the original exception stays chained for the logs.
    """

    status = 503
    kind = "backend-unavailable"

    def __init__(self, service: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.retry_after = retry_after

    @property
    def cause_name(self) -> str | None:
        cause = self.__cause__
        return type(cause).__name__ if cause is not None else None


class BackendUnavailable(BackendError):
    """The backend is unreachable, refused us or failed (503)."""

    def __init__(self, service: str, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(service, message or f"{service} is unavailable", retry_after=retry_after)


class BackendNotConfigured(BackendUnavailable):
    """The backend has no address configured in this deployment (503)."""

    kind = "backend-not-configured"

    def __init__(self, service: str) -> None:
        super().__init__(service, f"{service} is not configured in this deployment", retry_after=60)


class CircuitOpen(BackendUnavailable):
    """The circuit of the backend is open: we fail fast without calling it (503)."""

    kind = "circuit-open"

    def __init__(self, service: str, retry_after: int) -> None:
        super().__init__(
            service,
            f"{service} is failing; its circuit is open, retry in {retry_after} s",
            retry_after=max(1, retry_after),
        )


class CircuitTrialInProgress(CircuitOpen):
    """The circuit is half-open and its one trial call is still running: fail fast (503)."""

    def __init__(self, service: str) -> None:
        super().__init__(service, 1)
        self.args = (f"{service} is recovering; a trial call is in progress, retry in 1 s",)


class BackendTimeout(BackendError):
    """The backend did not answer within its timeout (504)."""

    status = 504
    kind = "backend-timeout"

    def __init__(self, service: str, timeout: float) -> None:
        super().__init__(service, f"{service} did not answer within {timeout:g} s")


class ObservedCircuitBreaker(CircuitBreaker):  # type: ignore[misc]
    """A ``circuitbreaker.CircuitBreaker`` that reports every transition to Prometheus.

    The package has no transition hooks, so state is compared before and after
    every call and whenever the state is read; open -> half-open happens by the
    clock, so it is noticed on the next read.
    """

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        ignored: tuple[type[BaseException], ...] = (),
        neutral: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.neutral = neutral

        def is_failure(exc_type: type[BaseException], exc: BaseException) -> bool:
            return issubclass(exc_type, Exception) and not issubclass(exc_type, ignored)

        super().__init__(
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            expected_exception=is_failure,
            name=service,
        )
        self.service = service
        self._reported = STATE_CLOSED
        self._up: Any = None  # backend_up child, created at the first outcome
        CIRCUIT_STATE.labels(service).set(0)

    def report_up(self, up: bool) -> None:
        """``backend_up`` follows call outcomes and the circuit, not only health checks."""
        if self._up is None:
            self._up = BACKEND_UP.labels(self.service)
        self._up.set(1 if up else 0)

    def observe(self) -> str:
        """Return the current state, emitting metrics if it changed since last seen."""
        state: str = self.state
        if state != self._reported:
            self._reported = state
            CIRCUIT_STATE.labels(self.service).set(_STATE_VALUES[state])
            counter = {
                STATE_OPEN: CIRCUIT_OPENED,
                STATE_HALF_OPEN: CIRCUIT_HALF_OPENED,
                STATE_CLOSED: CIRCUIT_CLOSED,
            }[state]
            counter.labels(self.service).inc()
            if state == STATE_OPEN:
                self.report_up(False)
        return state

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Literal[False]:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # Cancelled from outside (client gone, an outer timeout): the call proved
            # nothing, so it is neither a success (the package would reset) nor a failure.
            return False
        if exc_type is not None and issubclass(exc_type, self.neutral):
            return False  # caused by the request or the data: proves nothing either way
        failed = exc_type is not None and self.is_failure(exc_type, exc_value)
        if failed:
            CIRCUIT_FAILURES.labels(self.service).inc()
        self.report_up(not failed)
        super().__exit__(exc_type, exc_value, traceback)
        self.observe()
        return False

    @property
    def retry_after(self) -> int:
        return max(1, int(self.open_remaining))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of idempotent reads (``RETRY_*`` settings), with full jitter.

    Only connection errors are retried (the request never reached the backend, or
    the connection died under a read that can run again), and only inside the
    call's one timeout: a retry whose backoff would end past the deadline is not
    made, and a timeout is never retried, since it already spent the budget.
    """

    attempts: int = 1
    base_delay: float = 0.1
    max_delay: float = 2.0

    def backoff(self, failed: int) -> float:
        """Pause after the ``failed``-th failed attempt (1-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * math.pow(2, failed - 1)))


NO_RETRY = RetryPolicy()


def is_connection_error(exc: Exception) -> bool:
    """The default "transient" test: the connection was refused, reset or dropped."""
    return isinstance(exc, ConnectionError)


class BackendGuard:
    """One backend's circuit breaker, timeout and call metrics.

    Client classes own a guard and route every I/O call through :meth:`call`, so
    handlers never repeat the plumbing.

    Half-open admits exactly one trial call. The ``circuitbreaker`` package only
    tells the state (it lets every caller through once the recovery time is over,
    so a backend that just came back would get the whole backlog at once); the
    gate is ours: the first caller in half-open is the trial, everyone else fails
    fast with :class:`CircuitTrialInProgress` until the trial closes the circuit
    (success) or opens it again (failure).
    """

    def __init__(
        self,
        service: str,
        *,
        timeout: float,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        ignored: tuple[type[BaseException], ...] = (),
        retry: RetryPolicy = NO_RETRY,
        transient: Callable[[Exception], bool] = is_connection_error,
        neutral: tuple[type[BaseException], ...] = (),
        span_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.service = service
        #: Names and constant attributes (system, address, database) of this backend's
        #: client spans.
        self.span_specs = SpanSpecs(
            service, default_attributes(service) if span_attributes is None else span_attributes
        )
        self.timeout = timeout
        self.retry = retry
        self.transient = transient
        self.breaker = ObservedCircuitBreaker(
            service,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            ignored=ignored,
            neutral=neutral,
        )
        self._ignored = ignored + neutral
        self._trial: asyncio.Task[Any] | None = None  # the task making the trial call
        self._durations: dict[str, Any] = {}  # histogram child per operation

    @property
    def state(self) -> str:
        return self.breaker.observe()

    async def call(
        self,
        operation: str,
        func: Callable[[], Awaitable[T]],
        *,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> T:
        """Run ``func()`` under the breaker with a timeout (see :meth:`_call`), inside one
        client span when tracing is on: every backend call gets its span here."""
        if not tracing_state.active or not wanted_span(operation):
            return await self._call(operation, func, timeout, idempotent)
        with ClientSpan(self.span_specs, operation):
            return await self._call(operation, func, timeout, idempotent)

    async def _call(
        self,
        operation: str,
        func: Callable[[], Awaitable[T]],
        timeout: float | None,
        idempotent: bool,
    ) -> T:
        """Run ``func()`` under the breaker with a timeout; map failures to backend errors.

        Exceptions listed in ``ignored`` (e.g. "secret not found") are the
        backend answering correctly: they pass through unchanged and count as
        success for the breaker. Those in ``neutral`` were caused by the request or
        the data (a value that does not decode, a wrong type, our own pool being
        full): they pass through unchanged and leave the breaker as it was. An
        ``idempotent`` call (a read that can safely run twice) retries ``transient``
        errors under :attr:`retry`; the breaker sees one outcome for the whole call.
        """
        state = self.breaker.observe()
        if state == STATE_OPEN:
            raise CircuitOpen(self.service, self.breaker.retry_after)
        trial = False
        if state == STATE_HALF_OPEN:
            current = asyncio.current_task()
            if self._trial is None:
                # No await since the check: no other caller can slip in.
                self._trial, trial = current, True
            elif self._trial is not current:  # a call nested in the trial is part of it
                raise CircuitTrialInProgress(self.service)
        limit = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        try:
            with self.breaker:
                async with asyncio.timeout(limit) as budget:
                    if not idempotent or self.retry.attempts <= 1:
                        return await func()
                    return await self._with_retries(operation, func, budget)
        except TimeoutError as exc:
            raise BackendTimeout(self.service, limit) from exc
        except BackendError:
            raise
        except self._ignored:
            raise
        except Exception as exc:
            raise BackendUnavailable(
                self.service, f"{self.service} failed ({type(exc).__name__})"
            ) from exc
        finally:
            if trial:
                self._trial = None
            self._duration(operation).observe(time.perf_counter() - started)

    async def _with_retries(
        self, operation: str, func: Callable[[], Awaitable[T]], budget: asyncio.Timeout
    ) -> T:
        loop = asyncio.get_running_loop()
        failed = 0
        while True:
            try:
                return await func()
            except Exception as exc:
                failed += 1
                if (
                    failed >= self.retry.attempts
                    or isinstance(exc, (TimeoutError, BackendError, *self._ignored))
                    or not self.transient(exc)
                ):
                    raise
                pause = self.retry.backoff(failed)
                deadline = budget.when()
                if deadline is not None and loop.time() + pause >= deadline:
                    raise  # no time left for another attempt: fail now, not at the deadline
            BACKEND_CALL_RETRIES.labels(self.service, operation).inc()
            await asyncio.sleep(pause)

    def _duration(self, operation: str) -> Any:
        """The histogram child of ``operation``, looked up once (``labels()`` locks)."""
        child = self._durations.get(operation)
        if child is None:
            child = self._durations[operation] = BACKEND_CALL_DURATION.labels(
                self.service, operation
            )
        return child


async def retry(
    func: Callable[[], Awaitable[T]],
    *,
    attempts: int = 3,
    base_delay: float = 0.1,
    max_delay: float = 2.0,
    retry_on: tuple[type[BaseException], ...] = (BackendUnavailable, BackendTimeout),
) -> T:
    """Call ``func`` up to ``attempts`` times with full-jitter exponential backoff.

    Only for idempotent operations. An open circuit is never retried: the
    breaker already decided the backend is down.
    """
    for attempt in range(attempts):
        try:
            return await func()
        except CircuitOpen:
            raise
        except retry_on:
            if attempt == attempts - 1:
                raise
            ceiling = min(max_delay, base_delay * math.pow(2, attempt))
            await asyncio.sleep(random.uniform(0, ceiling))
    raise AssertionError("unreachable")
