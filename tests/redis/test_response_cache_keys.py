"""The response-cache key ignores undocumented query parameters, and concurrent misses
for one key share one run of the route (single flight), against a private Redis."""

from __future__ import annotations

import asyncio

from quart import Quart

import redis as redis_sync
from quartstack.integrations.redis.response_cache import _cache_key
from tests.support.app import running_app
from tests.support.vault import VaultTestServer

HEALTH = "/v1/sys/health"


def _cached_keys(port: int, route: str) -> list[bytes]:
    client = redis_sync.Redis(port=port)
    try:
        return list(client.scan_iter(f"*{route}*"))
    finally:
        client.close()


async def test_an_arbitrary_query_string_neither_bypasses_nor_fills_the_cache(private_redis):
    async with running_app(redis_host="127.0.0.1", redis_port=private_redis) as (_, c):
        first = await c.get("/health/all?x=1")
        assert first.headers["X-Cache"] == "MISS"
        for query in ("?x=2", "?y=3&x=random", "", "?"):
            again = await c.get("/health/all" + query)
            assert again.headers["X-Cache"] == "HIT", query  # before the fix: a MISS each
            assert await again.get_data() == await first.get_data()
        assert len(_cached_keys(private_redis, "/health/all")) == 1


async def test_documented_query_parameters_are_keyed_in_a_canonical_order():
    app = Quart(__name__)
    async with app.test_request_context("/p?b=2&zz=random&a=1&b=1"):
        assert _cache_key(("a", "b")).endswith("/p?a=1&b=1&b=2")
        assert _cache_key().endswith("/p")
    async with app.test_request_context("/p?b=1&a=1&b=2"):
        assert _cache_key(("a", "b")).endswith("/p?a=1&b=1&b=2")


async def test_concurrent_misses_on_health_all_check_the_backends_once(private_redis):
    with VaultTestServer() as vault:
        async with running_app(
            redis_host="127.0.0.1",
            redis_port=private_redis,
            vault_addr=vault.url,
            vault_token=vault.root_token,
            health_timeout_seconds=10,
        ) as (_, c):
            vault.request_counts(reset=True)
            vault.set_latency(0.5, path=HEALTH)  # the misses overlap for sure
            try:
                responses = await asyncio.gather(*(c.get("/health/all") for _ in range(20)))
            finally:
                vault.set_latency(0)
            assert vault.request_counts().get(HEALTH) == 1  # before the fix: 20
            assert {r.status_code for r in responses} == {200}
            states = sorted(r.headers["X-Cache"] for r in responses)
            assert states == ["HIT"] * 19 + ["MISS"]
            bodies = {await r.get_data() for r in responses}
            assert len(bodies) == 1
