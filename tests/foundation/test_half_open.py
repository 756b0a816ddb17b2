"""Half-open admits one trial call; the others fail fast until the trial decides."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from quartstack.resilience import BackendGuard, BackendUnavailable, CircuitOpen

CALLERS = 50


async def _opened_then_half_open() -> BackendGuard:
    guard = BackendGuard(
        f"svc-{uuid.uuid4().hex[:8]}", timeout=5, failure_threshold=1, recovery_timeout=0.2
    )

    async def refused() -> None:
        raise ConnectionError("refused")

    with pytest.raises(BackendUnavailable):
        await guard.call("op", refused)
    assert guard.state == "open"
    deadline = time.monotonic() + 10
    while guard.state != "half_open":
        assert time.monotonic() < deadline, "the circuit never became half-open"
        await asyncio.sleep(0.02)
    return guard


class FakeBackend:
    """Counts the calls that reach it and holds each one until released."""

    def __init__(self, *, fails: bool) -> None:
        self.calls = 0
        self.fails = fails
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.fails:
            raise ConnectionError("still down")
        return "ok"


async def _fifty_callers(guard: BackendGuard, backend: FakeBackend) -> list[object]:
    tasks = [asyncio.create_task(guard.call("op", backend)) for _ in range(CALLERS)]
    deadline = time.monotonic() + 10
    while sum(task.done() for task in tasks) < CALLERS - 1:  # all but the trial fail fast
        assert time.monotonic() < deadline, "callers other than the trial did not fail fast"
        await asyncio.sleep(0.01)
    backend.release.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_one_trial_reaches_the_backend_and_its_success_closes_the_circuit():
    guard = await _opened_then_half_open()
    backend = FakeBackend(fails=False)
    results = await _fifty_callers(guard, backend)
    assert backend.calls == 1
    assert results.count("ok") == 1
    refused = [r for r in results if r != "ok"]
    assert len(refused) == CALLERS - 1
    assert all(isinstance(r, CircuitOpen) and r.status == 503 for r in refused)
    assert all(r.retry_after >= 1 for r in refused if isinstance(r, CircuitOpen))
    assert guard.state == "closed"
    assert await guard.call("op", lambda: asyncio.sleep(0, "again")) == "again"


async def test_a_failed_trial_opens_the_circuit_again():
    guard = await _opened_then_half_open()
    backend = FakeBackend(fails=True)
    results = await _fifty_callers(guard, backend)
    assert backend.calls == 1
    assert sum(type(r) is BackendUnavailable for r in results) == 1
    assert sum(isinstance(r, CircuitOpen) for r in results) == CALLERS - 1
    assert guard.state == "open"
    with pytest.raises(CircuitOpen):
        await guard.call("op", backend)
    assert backend.calls == 1


async def test_a_cancelled_trial_lets_the_next_caller_try():
    guard = await _opened_then_half_open()
    backend = FakeBackend(fails=False)
    trial = asyncio.create_task(guard.call("op", backend))
    deadline = time.monotonic() + 10
    while backend.calls == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert guard.state == "half_open"  # a cancelled call proves nothing
    backend.release.set()
    assert await guard.call("op", backend) == "ok"
    assert backend.calls == 2
    assert guard.state == "closed"


async def test_a_call_nested_in_the_trial_is_part_of_it():
    guard = await _opened_then_half_open()

    async def connect_then_read() -> str:
        return await guard.call("connect", lambda: asyncio.sleep(0, "inner"))

    assert await guard.call("read", connect_then_read) == "inner"
    assert guard.state == "closed"
