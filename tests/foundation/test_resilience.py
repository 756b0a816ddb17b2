"""Circuit breaker, timeouts and retries (unit tests with real clocks, no backend)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from quartstack.resilience import (
    BackendGuard,
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    retry,
)
from tests.support.app import metric_value
from tests.support.breaker_clock import BreakerClock


def _guard(**kw) -> BackendGuard:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    return BackendGuard(service, timeout=kw.pop("timeout", 1.0), **kw)


async def _fail() -> None:
    raise ConnectionError("refused")


async def _ok() -> str:
    return "ok"


async def test_opens_after_threshold_half_opens_and_closes(breaker_clock: BreakerClock):
    breaker_clock.freeze()  # open stays open however slowly the lines below run
    guard = _guard(failure_threshold=3, recovery_timeout=0.3)
    service = guard.service
    for _ in range(3):
        with pytest.raises(BackendUnavailable) as info:
            await guard.call("op", _fail)
        assert not isinstance(info.value, CircuitOpen)
    assert metric_value("circuit_breaker_state", service=service) == 2
    assert metric_value("circuit_breaker_opened_total", service=service) == 1
    assert metric_value("circuit_breaker_failures_total", service=service) == 3
    with pytest.raises(CircuitOpen) as info:
        await guard.call("op", _ok)
    assert info.value.retry_after >= 1
    breaker_clock.advance(0.4)
    assert guard.state == "half_open"
    assert metric_value("circuit_breaker_state", service=service) == 1
    assert metric_value("circuit_breaker_half_open_total", service=service) == 1
    assert await guard.call("op", _ok) == "ok"
    assert metric_value("circuit_breaker_state", service=service) == 0
    assert metric_value("circuit_breaker_closed_total", service=service) == 1
    assert metric_value("backend_call_duration_seconds_count", service=service, operation="op") == 4


async def test_failure_in_half_open_reopens():
    guard = _guard(failure_threshold=1, recovery_timeout=0.2)
    with pytest.raises(BackendUnavailable):
        await guard.call("op", _fail)
    await asyncio.sleep(0.3)
    with pytest.raises(BackendUnavailable):
        await guard.call("op", _fail)
    assert guard.state == "open"
    assert metric_value("circuit_breaker_opened_total", service=guard.service) == 2


async def test_timeout_inside_the_breaker_is_a_failure():
    guard = _guard(failure_threshold=2, timeout=0.05)

    async def slow() -> None:
        await asyncio.sleep(5)

    for _ in range(2):
        with pytest.raises(BackendTimeout) as info:
            await guard.call("op", slow)
        assert info.value.status == 504
    assert guard.state == "open"


async def test_outer_cancellation_is_not_counted_as_success():
    guard = _guard(failure_threshold=3, timeout=10)
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await guard.call("op", _fail)

    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(guard.call("op", slow), 0.05)
    with pytest.raises(BackendUnavailable):
        await guard.call("op", _fail)
    assert guard.state == "open"  # 2 failures + cancelled + 1 failure: the count was kept


async def test_ignored_exceptions_pass_through_as_success():
    class NotFound(Exception):
        pass

    guard = _guard(failure_threshold=1, ignored=(NotFound,))

    async def missing() -> None:
        raise NotFound

    for _ in range(3):
        with pytest.raises(NotFound):
            await guard.call("op", missing)
    assert guard.state == "closed"


async def test_error_message_never_carries_driver_text():
    guard = _guard()

    async def leaky() -> None:
        raise ConnectionError("password=hunter2 rejected")

    with pytest.raises(BackendUnavailable) as info:
        await guard.call("op", leaky)
    assert "hunter2" not in str(info.value)


async def test_retry_is_bounded_with_full_jitter(monkeypatch):
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise BackendUnavailable("x")

    with pytest.raises(BackendUnavailable):
        await retry(flaky, attempts=4, base_delay=0.1, max_delay=0.25)
    assert calls == 4
    assert len(sleeps) == 3
    assert all(0 <= d <= cap for d, cap in zip(sleeps, [0.1, 0.2, 0.25], strict=True))


async def test_retry_never_retries_an_open_circuit():
    calls = 0

    async def open_circuit() -> None:
        nonlocal calls
        calls += 1
        raise CircuitOpen("x", 5)

    with pytest.raises(CircuitOpen):
        await retry(open_circuit, attempts=5, base_delay=0)
    assert calls == 1


async def test_retry_returns_first_success():
    results = iter([BackendTimeout("x", 1), "done"])

    async def eventually() -> str:
        value = next(results)
        if isinstance(value, Exception):
            raise value
        return value

    assert await retry(eventually, attempts=3, base_delay=0) == "done"
