"""A black-holed Redis (accepts connections, never answers) must not slow the routes
that only use it on the side: the rate limiter, the response cache and idempotency
keys fail open within their own short timeouts, then skip Redis while its circuit is
open, instead of waiting ``BACKEND_TIMEOUT_SECONDS`` (issue 16, item 3)."""

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

#: The goal of the issue: no request waits longer than this while Redis is silent.
BUDGET = 0.5


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


async def test_a_black_holed_redis_costs_no_request_more_than_half_a_second(client_ip):
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
            half_opened = metric_value("circuit_breaker_half_open_total", service="redis")
            timings: list[tuple[int, float]] = []

            def check() -> None:
                for status, elapsed in timings:
                    assert status in (200, 201)
                    assert elapsed < BUDGET, f"a request waited {elapsed:.2f} s for Redis"

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
            # Every limiter check failed open and was counted as before.
            assert metric_value("rate_limit_store_errors_total") == errors + len(timings)
            print(f"{len(timings)} requests; slowest of each kind (health, cached, keyed):")
            print([f"{max(t for _, t in timings[i::3]):.3f}" for i in range(3)])
