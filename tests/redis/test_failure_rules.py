"""What counts against the Redis circuit: only Redis failing, never the request or the data."""

from __future__ import annotations

import hashlib

import pytest
from redis.exceptions import MaxConnectionsError

import redis as redis_sync
from quartstack.integrations.redis.client import WaitingConnectionPool
from quartstack.resilience import BackendGuard, BackendUnavailable, CircuitOpen
from tests.support.app import metric_value, running_app


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


async def test_undecodable_records_are_misses_not_errors(private_redis):
    """Garbage under the service's own prefix (another writer, a bad restore): the cached
    response is a miss, the idempotency key is not enforced, nothing is a 500 or a failure."""
    key = "idem-garbage"
    digest = hashlib.sha256(key.encode()).hexdigest()
    direct = redis_sync.Redis(port=private_redis)
    direct.set("p:resp:/health/all", b"\xff\xfe")
    direct.set(f"p:idem:{{{digest}}}", b"\xff\xfe")
    settings = dict(redis_host="127.0.0.1", redis_port=private_redis, redis_key_prefix="p")
    async with running_app(**settings) as (app, c):
        before = metric_value("idempotency_not_enforced_total", reason="unreadable_record")
        failures = metric_value("circuit_breaker_failures_total", service="redis")
        health = await c.get("/health/all")
        assert health.status_code in (200, 503) and health.headers["X-Cache"] == "MISS"
        posted = await c.post("/examples/cache/k?value=v", headers={"Idempotency-Key": key})
        assert posted.status_code == 200, await posted.get_data()
        after = metric_value("idempotency_not_enforced_total", reason="unreadable_record")
        assert after == before + 1
        assert app.extensions["redis"].guard.state == "closed"
        assert metric_value("circuit_breaker_failures_total", service="redis") == failures
