"""RETRY_* for idempotent reads: connection errors retried inside the one timeout (unit,
with fake backend calls)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest

from quartstack.resilience import BackendGuard, BackendTimeout, BackendUnavailable, RetryPolicy
from tests.support.app import metric_value


class FlakyCall:
    """Fails with ``error`` the first ``failures`` times, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError("refused")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def _guard(attempts: int = 3, *, timeout: float = 5.0, **kw: object) -> BackendGuard:
    return BackendGuard(
        f"svc-{uuid.uuid4().hex[:8]}",
        timeout=timeout,
        retry=kw.pop("retry", RetryPolicy(attempts=attempts, base_delay=0.001, max_delay=0.01)),
        **kw,  # type: ignore[arg-type]
    )


async def test_an_idempotent_read_retries_connection_errors_and_counts_once():
    guard = _guard(failure_threshold=2)
    backend = FlakyCall(failures=2)
    assert await guard.call("read", backend, idempotent=True) == "ok"
    assert backend.calls == 3
    assert metric_value("backend_call_retries_total", service=guard.service, operation="read") == 2
    assert metric_value("circuit_breaker_failures_total", service=guard.service) == 0
    assert guard.state == "closed"


async def test_attempts_are_bounded_and_the_breaker_sees_one_failure():
    guard = _guard(attempts=3, failure_threshold=2)
    backend = FlakyCall(failures=10)
    with pytest.raises(BackendUnavailable):
        await guard.call("read", backend, idempotent=True)
    assert backend.calls == 3
    assert metric_value("circuit_breaker_failures_total", service=guard.service) == 1
    assert guard.state == "closed"


async def test_writes_and_other_errors_are_not_retried():
    guard = _guard()
    write = FlakyCall(failures=1)
    with pytest.raises(BackendUnavailable):
        await guard.call("write", write)  # not idempotent
    assert write.calls == 1
    wrong = FlakyCall(failures=1, error=ValueError("bad reply"))
    with pytest.raises(BackendUnavailable):
        await guard.call("read", wrong, idempotent=True)
    assert wrong.calls == 1
    timed_out = FlakyCall(failures=1, error=TimeoutError("driver timeout"))
    with pytest.raises(BackendTimeout):
        await guard.call("read", timed_out, idempotent=True)
    assert timed_out.calls == 1


async def test_one_attempt_means_no_retry():
    guard = _guard(attempts=1)
    backend = FlakyCall(failures=1)
    with pytest.raises(BackendUnavailable):
        await guard.call("read", backend, idempotent=True)
    assert backend.calls == 1


@dataclass(frozen=True)
class FixedBackoff(RetryPolicy):
    pause: float = 0.0

    def backoff(self, failed: int) -> float:
        return self.pause


async def test_no_retry_past_the_deadline_fails_at_once_with_503_not_504():
    guard = _guard(timeout=0.5, retry=FixedBackoff(attempts=5, pause=2.0))
    backend = FlakyCall(failures=1)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await guard.call("read", backend, idempotent=True)
    assert not isinstance(info.value, BackendTimeout)
    assert time.monotonic() - started < 0.5  # did not sleep into the deadline
    assert backend.calls == 1


async def test_the_timeout_bounds_every_attempt_together():
    guard = _guard(timeout=0.3, retry=FixedBackoff(attempts=10, pause=0.0))

    async def slow_then_refused() -> None:
        await asyncio.sleep(0.1)
        raise ConnectionRefusedError("refused")

    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await guard.call("read", slow_then_refused, idempotent=True)
    assert time.monotonic() - started < 2.0  # not 10 x 0.1 s plus a timeout per attempt
