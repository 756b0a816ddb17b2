"""``backend_up`` follows the breaker and the outcome of real calls, not only health
checks (it used to read 1 through a whole outage until a probe ran)."""

from __future__ import annotations

import uuid

import pytest

from quartstack.resilience import BackendGuard, BackendUnavailable, CircuitOpen
from tests.support.app import metric_value
from tests.support.breaker_clock import BreakerClock


class Answered(Exception):
    """The backend answered with an error about the request (ignored by the breaker)."""


async def _fail() -> None:
    raise ConnectionError("refused")


async def _ok() -> str:
    return "ok"


async def _answered() -> None:
    raise Answered


def _up(service: str) -> float | None:
    from quartstack.metrics import REGISTRY

    return REGISTRY.get_sample_value("backend_up", {"service": service})


async def test_backend_up_follows_calls_and_the_circuit(breaker_clock: BreakerClock):
    breaker_clock.freeze()  # open stays open however slowly the lines below run
    service = f"svc-{uuid.uuid4().hex[:8]}"
    guard = BackendGuard(
        service, timeout=1.0, failure_threshold=2, recovery_timeout=0.2, ignored=(Answered,)
    )
    assert _up(service) is None  # nothing known before the first outcome
    assert await guard.call("op", _ok) == "ok"
    assert _up(service) == 1
    with pytest.raises(BackendUnavailable):
        await guard.call("op", _fail)
    assert _up(service) == 0  # the outage shows at the first failed call
    with pytest.raises(Answered):
        await guard.call("op", _answered)
    assert _up(service) == 1  # the backend answered: it is up
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await guard.call("op", _fail)
    assert metric_value("circuit_breaker_state", service=service) == 2
    assert _up(service) == 0
    with pytest.raises(CircuitOpen):
        await guard.call("op", _ok)
    assert _up(service) == 0
    breaker_clock.advance(0.3)
    assert guard.state == "half_open"
    assert await guard.call("op", _ok) == "ok"  # the trial call closes the circuit
    assert _up(service) == 1
