"""A black-holed Redis (accepts connections, never answers) must not slow the routes
that only use it on the side: the rate limiter, the response cache and idempotency
keys fail open within their own short timeouts, then skip Redis while its circuit is
open, instead of waiting ``BACKEND_TIMEOUT_SECONDS`` (issue 16, item 3).

The claim is checked where it is made, per Redis call: every call to the silent Redis
ends within a few side timeouts (the duration histogram's buckets), never near the
backend timeout. Whole requests get a looser wall-clock bound, well under one backend
timeout, that a slow host's scheduling cannot break."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from quart import Quart

from quartstack.integrations.redis.response_cache import cached_response
from quartstack.settings import Settings
from tests.support.app import SIDE_TIMEOUTS, metric_value, running_app
from tests.support.net import TcpProxy
from tests.support.polling import wait_until

#: Side timeouts are 0.1 s: every Redis call must end within this bucket of
#: ``backend_call_duration_seconds`` (5x, room for a slow host's timer callbacks).
CALL_BUDGET = 0.5
#: A request makes up to three side calls in a row; waiting for one backend timeout
#: (5 s) would break this bound.
REQUEST_BUDGET = 2.0


def _redis_calls() -> tuple[float, float]:
    """(calls, calls that ended within ``CALL_BUDGET``) made to the data Redis so far."""
    from quartstack.metrics import REGISTRY

    calls = within = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "backend_call_duration_seconds":
            continue
        for sample in metric.samples:
            if sample.labels.get("service") != "redis":
                continue
            if sample.name.endswith("_count"):
                calls += sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == CALL_BUDGET:
                within += sample.value
    return calls, within


def _side_routes(app: Quart) -> None:
    """A cached route and a POST that touch no backend: their only Redis use is the
    cache, the limiter and the idempotency key."""

    @app.get("/test/cached")
    @cached_response(ttl=30)
    async def cached() -> dict[str, Any]:
        return {"cached": True}

    @app.post("/test/keyed")
    async def keyed() -> tuple[dict[str, Any], int]:
        return {"created": True}, 201


async def _timed(request: Any) -> tuple[int, float]:
    started = time.perf_counter()
    response = await request
    return response.status_code, time.perf_counter() - started


async def test_a_black_holed_redis_costs_each_call_no_more_than_its_side_timeout(client_ip):
    headers = lambda: {"Idempotency-Key": uuid.uuid4().hex}  # noqa: E731
    scope = {"scope_base": {"client": (client_ip, 40000)}}
    with TcpProxy(6379) as proxy:
        settings = dict(
            redis_host="127.0.0.1",
            redis_port=proxy.port,
            rate_limit_enabled=True,
            backend_timeout_seconds=5.0,  # the default, which each side use waited before
            circuit_recovery_seconds=0.5,  # trial calls (half-open) during the test
            **{name: Settings.model_fields[name].default for name in SIDE_TIMEOUTS},
        )
        async with running_app(prepare=_side_routes, **settings) as (app, c):

            def requests() -> list[Any]:
                return [
                    c.get("/health/", **scope),
                    c.get("/test/cached", **scope),
                    c.post("/test/keyed", json={}, headers=headers(), **scope),
                ]

            for request in requests():  # Redis answers: everything works through it
                assert (await request).status_code in (200, 201)
            assert (await c.get("/test/cached", **scope)).headers["X-Cache"] == "HIT"
            errors = metric_value("rate_limit_store_errors_total")

            proxy.set_mode("delay", delay=3600)  # open connections and new ones go silent
            calls_before, within_before = _redis_calls()
            half_opened = metric_value("circuit_breaker_half_open_total", service="redis")
            timings: list[tuple[int, float]] = []

            def check() -> None:
                for status, elapsed in timings:
                    assert status in (200, 201)
                    assert elapsed < REQUEST_BUDGET, f"a request waited {elapsed:.2f} s"

            async def one_round() -> bool:
                """One request of each kind, one by one; done once the circuit has gone
                half-open twice (each time a request was Redis's trial call)."""
                timings.extend([await _timed(r) for r in requests()])
                check()
                probes = metric_value("circuit_breaker_half_open_total", service="redis")
                return probes - half_opened >= 2

            try:
                # The first ones after Redis went silent, at once, then one by one until
                # the circuit has opened and let trial calls through.
                timings += await asyncio.gather(*(_timed(r) for _ in range(3) for r in requests()))
                check()
                await wait_until(one_round, what="two half-open trials of the Redis circuit")
            finally:
                proxy.close_connections()
            assert app.extensions["redis"].guard.state in ("open", "half-open")
            calls, within = _redis_calls()
            # The burst's calls and each half-open trial reached the silent Redis...
            assert calls - calls_before >= 1 + 2
            # ...and every one of them gave up within its side timeout.
            assert within - within_before == calls - calls_before
            # Every limiter check failed open and was counted as before.
            assert metric_value("rate_limit_store_errors_total") == errors + len(timings)
            print(f"{len(timings)} requests; slowest of each kind (health, cached, keyed):")
            print([f"{max(t for _, t in timings[i::3]):.3f}" for i in range(3)])
