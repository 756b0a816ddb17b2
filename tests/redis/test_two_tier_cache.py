"""The response cache's in-process tier in front of Redis, against real Redis (issue 18,
item 3): invalidations reach other replicas over pub/sub, a memory hit makes no Redis
call, the TTL and size bounds hold, a cold key costs one backend call per replica, and a
lost Redis only switches the memory tier off."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from quart import Quart

from quartstack.integrations.redis.response_cache import (
    ResponseCache,
    cached_response,
    response_cache,
)
from tests.support.app import metric_value, running_app
from tests.support.net import TcpProxy
from tests.support.polling import wait_until

REDIS = dict(redis_host="127.0.0.1", redis_port=6379)
ENDPOINT = "/test/tiered/{name}"


class Backend:
    """What the cached test route serves, and how often it ran (the backend calls)."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self.gate: asyncio.Event | None = None

    def routes(self, app: Quart) -> None:
        @app.get("/test/tiered/<name>")
        @cached_response(ttl=300)
        async def tiered(name: str) -> dict[str, Any]:
            self.calls += 1
            if self.gate is not None:
                await self.gate.wait()
            return {"name": name, "version": self.version}

        @app.get("/test/short/<name>")
        @cached_response(ttl=1)
        async def short(name: str) -> dict[str, Any]:
            self.calls += 1
            return {"name": name, "version": self.version}


def _name() -> str:
    return f"k{uuid.uuid4().hex[:12]}"


def _hits(tier: str, endpoint: str = ENDPOINT) -> float:
    return metric_value("cache_hits_total", endpoint=endpoint, tier=tier)


def _misses(tier: str, endpoint: str = ENDPOINT) -> float:
    return metric_value("cache_misses_total", endpoint=endpoint, tier=tier)


def _redis_reads() -> float:
    """Reads of the shared tier (every app in this process counts here)."""
    return metric_value(
        "backend_call_duration_seconds_count", service="redis", operation="cache_get"
    )


def _cache(app: Quart) -> ResponseCache:
    cache = response_cache(app)
    assert cache is not None
    return cache


async def _subscribed(*apps: Quart) -> None:
    await wait_until(
        lambda: all(_cache(app).local.usable() for app in apps),
        timeout=5.0,
        what="the invalidation subscription",
    )


async def _version(client: Any, path: str) -> int:
    response = await client.get(path)
    assert response.status_code == 200, await response.get_data()
    return int((await response.get_json())["version"])


async def test_invalidation_on_one_replica_reaches_the_other_within_a_deadline():
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    settings = dict(REDIS, response_cache_local_ttl_seconds=30)  # expiry cannot explain it
    async with (
        running_app(prepare=backend.routes, **settings) as (first_app, first),
        running_app(prepare=backend.routes, **settings) as (second_app, second),
    ):
        await _subscribed(first_app, second_app)
        assert await _version(first, path) == 1  # rendered, stored in Redis and memory
        assert await _version(second, path) == 1  # read from Redis, kept in memory
        memory = _hits("memory")
        assert await _version(second, path) == 1
        assert _hits("memory") == memory + 1
        backend.version = 2
        dropped = await first.delete(f"/redis/cache/responses?pattern=/test/tiered/{name}")
        assert (await dropped.get_json())["deleted"] == 1
        assert await _version(first, path) == 2  # its own memory tier dropped it at once

        async def fresh_on_second() -> bool:
            return await _version(second, path) == 2

        await wait_until(fresh_on_second, timeout=2.0, what="the invalidation on the other app")
        assert backend.calls == 2


async def test_a_memory_hit_makes_no_redis_call():
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    async with running_app(prepare=backend.routes, **REDIS) as (app, c):
        await _subscribed(app)
        first = await c.get(path)
        assert first.headers["X-Cache"] == "MISS"
        reads, memory = _redis_reads(), _hits("memory")
        for _ in range(5):
            hit = await c.get(path)
            assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT"
            assert hit.headers["ETag"] == first.headers["ETag"]
            assert hit.headers["Cache-Control"] in ("public, max-age=300", "public, max-age=299")
        not_modified = await c.get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert not_modified.status_code == 304 and await not_modified.get_data() == b""
        assert _redis_reads() == reads
        assert _hits("memory") == memory + 6
        assert backend.calls == 1


async def test_a_memory_copy_lives_at_most_the_local_ttl():
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    async with running_app(
        prepare=backend.routes, **REDIS, response_cache_local_ttl_seconds=0.3
    ) as (app, c):
        await _subscribed(app)
        await c.get(path)
        stored = time.monotonic()
        reads = _redis_reads()

        async def read_redis_again() -> bool:
            await c.get(path)
            return _redis_reads() > reads

        await wait_until(read_redis_again, timeout=2.0, interval=0.01)
        assert time.monotonic() - stored >= 0.3
        assert backend.calls == 1  # the Redis copy (300 s) answered


async def test_a_memory_copy_never_outlives_its_redis_copy():
    backend, name = Backend(), _name()
    path = f"/test/short/{name}"  # cached 1 s in Redis
    settings = dict(REDIS, response_cache_local_ttl_seconds=30)
    async with running_app(prepare=backend.routes, **settings) as (app, c):
        await _subscribed(app)
        await c.get(path)
        stored = time.monotonic()
        hit = await c.get(path)
        assert hit.headers["X-Cache"] == "HIT"
        assert hit.headers["Cache-Control"] in ("public, max-age=0", "public, max-age=1")
        backend.version = 2

        async def rendered_again() -> bool:
            return await _version(c, path) == 2

        await wait_until(rendered_again, timeout=3.0, interval=0.05)
        assert time.monotonic() - stored < 3.0
        assert backend.calls == 2


async def test_the_memory_tier_keeps_the_most_recently_used_entries():
    backend = Backend()
    paths = [f"/test/tiered/{_name()}" for _ in range(3)]
    settings = dict(REDIS, response_cache_local_max_entries=2)
    async with running_app(prepare=backend.routes, **settings) as (app, c):
        await _subscribed(app)
        await c.get(paths[0])
        await c.get(paths[1])
        reads = _redis_reads()
        await c.get(paths[0])  # a memory hit: paths[1] is now the least recently used
        await c.get(paths[2])  # a miss (1 read): evicts paths[1], not paths[0]
        assert _redis_reads() == reads + 1
        assert len(_cache(app).local) == 2
        await c.get(paths[0])
        await c.get(paths[2])
        assert _redis_reads() == reads + 1  # both still in memory
        await c.get(paths[1])  # evicted: read from Redis
        assert _redis_reads() == reads + 2
        assert len(_cache(app).local) == 2
        assert backend.calls == 3


async def test_a_cold_key_costs_one_backend_call_per_replica():
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    backend.gate = asyncio.Event()
    clients = 20
    async with (
        running_app(prepare=backend.routes, **REDIS) as (first_app, first),
        running_app(prepare=backend.routes, **REDIS) as (second_app, second),
    ):
        await _subscribed(first_app, second_app)
        missed = _misses("memory")
        requests = [asyncio.ensure_future(first.get(path)) for _ in range(clients)]
        # Every request missed in memory (then joined the one flight, with no await
        # between): only now may the backend answer.
        await wait_until(lambda: _misses("memory") == missed + clients, what="every request")
        backend.gate.set()
        responses = await asyncio.gather(*requests)
        assert [r.status_code for r in responses] == [200] * clients
        assert backend.calls == 1
        assert len({r.headers["ETag"] for r in responses}) == 1
        # The other replica: one Redis read for all of its concurrent requests, no render.
        reads = _redis_reads()
        responses = await asyncio.gather(*(second.get(path) for _ in range(clients)))
        assert [r.status_code for r in responses] == [200] * clients
        assert backend.calls == 1
        assert _redis_reads() == reads + 1


async def test_redis_down_serves_from_the_backend_and_the_memory_tier_comes_back():
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    with TcpProxy(6379) as proxy:
        settings = dict(REDIS, redis_port=proxy.port, circuit_recovery_seconds=0.5)
        async with running_app(prepare=backend.routes, **settings) as (app, c):
            await _subscribed(app)
            await c.get(path)
            assert (await c.get(path)).headers["X-Cache"] == "HIT"
            proxy.set_mode("refuse")
            proxy.close_connections()
            local = _cache(app).local
            await wait_until(lambda: not local.usable(), timeout=2.0, what="the tier off")
            calls = backend.calls
            responses = [await c.get(path) for _ in range(5)]
            responses += await asyncio.gather(*(c.get(path) for _ in range(10)))
            assert [r.status_code for r in responses] == [200] * 15
            assert {r.headers["X-Cache"] for r in responses} <= {"MISS", "HIT"}
            assert backend.calls > calls  # served by the route, not by a stale memory copy
            proxy.set_mode("pass")
            await wait_until(local.usable, timeout=10.0, what="the resubscription")
            await c.get(path)  # refills both tiers
            reads = _redis_reads()
            assert (await c.get(path)).headers["X-Cache"] == "HIT"
            assert _redis_reads() == reads


async def test_invalidation_reaches_another_replica_on_the_cluster(redis_cluster):
    backend, name = Backend(), _name()
    path = f"/test/tiered/{name}"
    nodes = redis_cluster.node_list.split(",")
    common = dict(response_cache_local_ttl_seconds=30)
    # Each replica subscribes on the first node of its list: two different nodes.
    async with (
        running_app(prepare=backend.routes, redis_nodes=nodes, **common) as (first_app, first),
        running_app(prepare=backend.routes, redis_nodes=nodes[1:] + nodes[:1], **common) as (
            second_app,
            second,
        ),
    ):
        await _subscribed(first_app, second_app)
        assert await _version(first, path) == 1
        assert await _version(second, path) == 1
        memory = _hits("memory")
        assert await _version(second, path) == 1
        assert _hits("memory") == memory + 1
        backend.version = 2
        dropped = await first.delete(f"/redis/cache/responses?pattern=/test/tiered/{name}*")
        assert (await dropped.get_json())["deleted"] == 1

        async def fresh_on_second() -> bool:
            return await _version(second, path) == 2

        await wait_until(fresh_on_second, timeout=2.0, what="the invalidation on the cluster")
