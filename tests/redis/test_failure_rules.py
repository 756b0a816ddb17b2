"""What counts against the Redis circuit: only Redis failing, never the request or the data."""

from __future__ import annotations

import pytest
from redis.exceptions import MaxConnectionsError

from quartstack.integrations.redis.client import WaitingConnectionPool
from quartstack.resilience import BackendGuard, BackendUnavailable, CircuitOpen


class Broken(Exception):
    pass


class Caused(Exception):
    pass


async def _raise(exc: Exception) -> None:
    raise exc


async def test_neutral_errors_pass_through_and_leave_the_breaker_alone():
    guard = BackendGuard("neutral-test", timeout=1, failure_threshold=2, neutral=(Caused,))
    with pytest.raises(BackendUnavailable):
        await guard.call("op", lambda: _raise(Broken()))
    for _ in range(10):  # neither a failure (opening) nor a success (resetting the count)
        with pytest.raises(Caused):
            await guard.call("op", lambda: _raise(Caused()))
        assert guard.state == "closed"
    with pytest.raises(BackendUnavailable):
        await guard.call("op", lambda: _raise(Broken()))
    assert guard.state == "open"
    with pytest.raises(CircuitOpen):
        await guard.call("op", lambda: _raise(Caused()))


async def test_a_full_pool_is_pool_exhaustion_not_a_connection_failure():
    """redis-py raises ConnectionError when no connection frees up in time, which the
    breaker would count; ours says the pool is full (neutral for the breaker)."""
    pool = WaitingConnectionPool(host="127.0.0.1", port=6379, max_connections=1, timeout=0.05)
    held = await pool.get_connection()
    try:
        with pytest.raises(MaxConnectionsError):
            await pool.get_connection()
    finally:
        await pool.release(held)
        await pool.aclose()
