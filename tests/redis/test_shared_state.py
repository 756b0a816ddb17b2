"""Rate limiting, idempotency keys and the response cache, shared through real Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import uuid
from datetime import timedelta

from quart_rate_limiter import RateLimit, rate_exempt, rate_limit

import redis as redis_sync
from quartstack.app import create_app
from quartstack.settings import load_settings
from tests.redis.conftest import private_redis_server
from tests.redis.fake_redis6 import FakeRedis6
from tests.support.app import (
    PATIENT_SIDE_CALLS,
    TEST_KEY_PREFIX,
    captured_json_logs,
    metric_value,
    running_app,
)
from tests.support.net import TcpProxy
from tests.support.polling import wait_until

PROBLEM = "application/problem+json"
HEADER = "Idempotency-Key"
TIERS = ("memory", "redis")
REDIS = dict(redis_host="127.0.0.1", redis_port=6379, rate_limit_enabled=True)


def _idempotency_record(key: str) -> str:
    """Where the app under test keeps the record of an Idempotency-Key."""
    return f"{TEST_KEY_PREFIX}:idem:{{{hashlib.sha256(key.encode()).hexdigest()}}}"


def _cache_hits(endpoint: str) -> float:
    """Hits of both tiers (memory: this process, redis: the shared one)."""
    return sum(metric_value("cache_hits_total", endpoint=endpoint, tier=t) for t in TIERS)


def _backend_runs(endpoint: str) -> float:
    """Misses in the last tier: the route ran."""
    return metric_value("cache_misses_total", endpoint=endpoint, tier="redis")


def _as(ip):
    return {"scope_base": {"client": (ip, 40000)}}


async def test_one_limit_shared_by_two_app_instances(client_ip):
    settings = dict(REDIS, rate_limit_default=10)
    async with running_app(**settings) as (_, first), running_app(**settings) as (_, second):
        statuses = []
        for i in range(24):
            client = first if i % 2 else second
            statuses.append((await client.get("/", **_as(client_ip))).status_code)
        assert statuses.count(200) == 10
        assert statuses.count(429) == 14


async def test_429_problem_with_retry_after_and_ratelimit_headers(client_ip):
    async with running_app(**dict(REDIS, rate_limit_default=3)) as (_, c):
        before = metric_value("rate_limit_hits_total", endpoint="/")
        first = await c.get("/", **_as(client_ip))
        assert first.headers["RateLimit-Limit"] == "3"
        assert first.headers["RateLimit-Remaining"] == "2"
        assert int(first.headers["RateLimit-Reset"]) >= 1
        for _ in range(2):
            assert (await c.get("/", **_as(client_ip))).status_code == 200
        limited = await c.get("/", **_as(client_ip))
        assert limited.status_code == 429
        assert limited.content_type == PROBLEM
        body = await limited.get_json()
        assert body["type"] == "/problems/rate-limited" and body["status"] == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        assert limited.headers["RateLimit-Remaining"] == "0"
        assert metric_value("rate_limit_hits_total", endpoint="/") == before + 1
        other = await c.get("/", **_as(client_ip + "1"))
        assert other.status_code == 200  # another client has its own budget


async def test_route_specific_limits_and_exempt_probes(client_ip):
    settings = dict(REDIS, rate_limit_default=2, rate_limit_health=4, rate_limit_metrics=6)
    async with running_app(**settings) as (_, c):
        for path in ["/health/live", "/health/ready", "/health/startup"]:
            for _ in range(10):
                response = await c.get(path, **_as(client_ip))
                assert response.status_code == 200
                assert "RateLimit-Limit" not in response.headers
        health = [(await c.get("/health/", **_as(client_ip))).status_code for _ in range(6)]
        assert health == [200] * 4 + [429] * 2
        metrics = [(await c.get("/metrics", **_as(client_ip))).status_code for _ in range(8)]
        assert metrics == [200] * 6 + [429] * 2


async def test_forwarded_for_only_from_trusted_proxies(client_ip):
    settings = dict(REDIS, rate_limit_default=2, trusted_proxies=["192.0.2.0/24"])
    async with running_app(**settings) as (_, c):
        proxy = {"scope_base": {"client": ("192.0.2.7", 1)}}
        statuses = []
        for i in range(4):  # distinct forwarded clients behind the trusted proxy
            response = await c.get("/", headers={"X-Forwarded-For": f"{client_ip}{i}"}, **proxy)
            statuses.append(response.status_code)
        assert statuses == [200] * 4
        spoofed = []
        for i in range(4):  # an untrusted peer cannot pick its address with the header
            response = await c.get(
                "/", headers={"X-Forwarded-For": f"{client_ip}{i}"}, **_as(client_ip)
            )
            spoofed.append(response.status_code)
        assert spoofed == [200, 200, 429, 429]


async def test_fails_open_when_redis_is_unreachable(client_ip):
    with TcpProxy(6379) as proxy:
        settings = dict(
            REDIS, redis_port=proxy.port, rate_limit_default=2, circuit_failure_threshold=100
        )
        async with running_app(**settings) as (_, c):
            assert (await c.get("/", **_as(client_ip))).status_code == 200
            proxy.set_mode("refuse")
            proxy.close_connections()
            errors = metric_value("rate_limit_store_errors_total")
            with captured_json_logs() as logs:
                statuses = [(await c.get("/", **_as(client_ip))).status_code for _ in range(5)]
            assert statuses == [200] * 5
            assert metric_value("rate_limit_store_errors_total") == errors + 5
            assert logs.getvalue().count("rate limiting fails open") == 1
            cache = await c.get("/examples/cache/anything", **_as(client_ip))
            assert cache.status_code == 503 and cache.content_type == PROBLEM
            proxy.set_mode("pass")
            assert (await c.get("/", **_as(client_ip))).status_code == 200
            limited = await c.get("/", **_as(client_ip))
            assert limited.status_code == 429  # limiting is back once Redis answers


async def test_redis_down_at_startup_is_logged_and_connects_on_first_use():
    with TcpProxy(6379) as proxy:
        proxy.set_mode("refuse")
        with captured_json_logs() as logs:
            async with running_app(**dict(REDIS, redis_port=proxy.port)) as (_, c):
                assert (await c.get("/health/startup")).status_code == 200
                down = [json.loads(line) for line in logs.getvalue().splitlines()]
                assert any(
                    line["message"] == "redis unavailable at startup; will connect on first use"
                    and line["service"] == "redis"
                    for line in down
                )
                proxy.set_mode("pass")
                assert (await c.get("/health/redis")).status_code == 200


async def test_idempotent_replay_and_key_reuse(prefix):
    key = f"idem-{uuid.uuid4().hex}"
    async with running_app(**REDIS) as (_, c):
        first = await c.post(
            f"/examples/cache/{prefix}?value=one", headers={"Idempotency-Key": key}
        )
        assert first.status_code == 200 and "Idempotency-Replayed" not in first.headers
        redis_sync.Redis(port=6379).set(prefix, "changed-behind-our-back")
        replay = await c.post(
            f"/examples/cache/{prefix}?value=one", headers={"Idempotency-Key": key}
        )
        assert replay.status_code == 200
        assert replay.headers["Idempotency-Replayed"] == "true"
        assert await replay.get_json() == await first.get_json()
        assert redis_sync.Redis(port=6379).get(prefix) == b"changed-behind-our-back"
        reused = await c.post(
            f"/examples/cache/{prefix}?value=two", headers={"Idempotency-Key": key}
        )
        assert reused.status_code == 422 and reused.content_type == PROBLEM
        assert (await reused.get_json())["type"] == "/problems/idempotency-key-reused"
        bad = await c.post(
            f"/examples/cache/{prefix}?value=one", headers={"Idempotency-Key": "x" * 300}
        )
        assert bad.status_code == 400 and bad.content_type == PROBLEM
    redis_sync.Redis(port=6379).delete(prefix)


def _claimed(idempotency_key: str) -> bool:
    """Whether the record of ``idempotency_key`` is in Redis (read directly, not through
    the delaying proxy). Its name embeds the key's digest, whatever prefix it has."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    with redis_sync.Redis(port=6379) as direct:
        return any(True for _ in direct.scan_iter(f"*{digest}*", count=1000))


async def test_idempotent_retry_while_running_is_409(prefix):
    key = f"idem-{uuid.uuid4().hex}"
    with TcpProxy(6379) as proxy:
        settings = dict(REDIS, redis_port=proxy.port, rate_limit_enabled=False)
        async with running_app(**settings) as (_, c):
            proxy.set_mode("delay", 0.2)  # two overlapping reads leave two open connections
            await asyncio.gather(*(c.get(f"/examples/cache/{prefix}") for _ in range(2)))
            proxy.set_mode("delay", 0.5)
            first = asyncio.create_task(
                c.post(f"/examples/cache/{prefix}?value=v", headers={"Idempotency-Key": key})
            )
            await wait_until(lambda: _claimed(key), what="the first request's claim")
            second = await c.post(
                f"/examples/cache/{prefix}?value=v", headers={"Idempotency-Key": key}
            )
            assert second.status_code == 409, (second.headers, await second.get_data())
            assert second.content_type == PROBLEM
            assert (await second.get_json())["type"] == "/problems/idempotency-in-progress"
            assert (await first).status_code == 200
            proxy.set_mode("pass")
    redis_sync.Redis(port=6379).delete(prefix)


async def test_response_cache_for_vault_routes(vault_server):
    name = f"cached-{uuid.uuid4().hex[:8]}"
    vault_server.write_secret(name, {"user": "u1", "password": "p-" + uuid.uuid4().hex})
    settings = dict(
        REDIS,
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        vault_cache_ttl_seconds=0,
        rate_limit_enabled=False,
    )
    path = f"/examples/vault/secret/{name}"
    async with running_app(**settings) as (_, c):
        endpoint = "/examples/vault/secret/{service_name}"
        hits, misses = _cache_hits(endpoint), _backend_runs(endpoint)
        first = await c.get(path)
        assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
        assert first.headers["Cache-Control"] == "private, max-age=300"
        etag = first.headers["ETag"]
        vault_server.write_secret(name, {"user": "u2"})  # cached answer stays until invalidated
        second = await c.get(path)
        assert second.headers["X-Cache"] == "HIT" and second.headers["ETag"] == etag
        assert await second.get_json() == await first.get_json()
        assert second.headers["Cache-Control"].startswith("private, max-age=")
        assert 0 < int(second.headers["Cache-Control"].split("=")[1]) <= 300
        not_modified = await c.get(path, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and await not_modified.get_data() == b""
        assert _cache_hits(endpoint) == hits + 2
        assert _backend_runs(endpoint) == misses + 1
        stored = list(redis_sync.Redis(port=6379).scan_iter(f"{TEST_KEY_PREFIX}:resp:{path}*"))
        assert stored, "the response is stored in Redis, shared by replicas"
        label = "/examples/vault/secret/*"
        invalidated = metric_value("cache_invalidations_total", pattern=label)
        dropped = await c.delete(f"/redis/cache/responses?pattern=/examples/vault/secret/{name}*")
        assert (await dropped.get_json())["deleted"] == 1
        assert metric_value("cache_invalidations_total", pattern=label) == invalidated + 1
        fresh = await c.get(path)
        assert fresh.headers["X-Cache"] == "MISS"
        assert (await fresh.get_json())["data"]["user"] == "u2"
    vault_server.delete_secret(name)


async def test_health_all_cached_and_served_when_redis_down():
    with TcpProxy(6379) as proxy:
        settings = dict(REDIS, redis_port=proxy.port, rate_limit_enabled=False)
        async with running_app(**settings) as (_, c):
            with contextlib.suppress(Exception):
                redis_sync.Redis(port=6379).delete(f"{TEST_KEY_PREFIX}:resp:/health/all")
            first = await c.get("/health/all")
            assert first.headers["X-Cache"] == "MISS"
            assert (await c.get("/health/all")).headers["X-Cache"] == "HIT"
            proxy.set_mode("refuse")
            proxy.close_connections()
            answers = []

            async def degraded():
                answers.append(await c.get("/health/all"))
                return answers[-1].status_code == 503

            # The in-memory copy may answer until the lost subscription switches that
            # tier off (at once on a closed connection; at most its TTL otherwise).
            await wait_until(degraded, timeout=2.0)
            assert all(a.headers["X-Cache"] == "HIT" for a in answers[:-1])
            down = answers[-1]
            assert down.headers["X-Cache"] == "MISS"
            body = json.loads(await down.get_data())
            assert body["status"] == "degraded"
            assert body["services"]["redis"]["status"] == "unhealthy"


async def test_several_limits_are_checked_and_counted_atomically(client_ip):
    """A refused request consumes none of its limits (checked and counted in one script)."""
    app = create_app(load_settings(**REDIS, **PATIENT_SIDE_CALLS, rate_limit_default=1))

    @app.get("/test/limited")
    @rate_limit(limits=[RateLimit(2, timedelta(seconds=10)), RateLimit(4, timedelta(minutes=1))])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/test/exempt")
    @rate_exempt
    async def exempt() -> dict[str, bool]:
        return {"ok": True}

    async with app.test_app() as test_app:
        c = test_app.test_client()
        first = await c.get("/test/limited", **_as(client_ip))
        assert first.headers["RateLimit-Limit"] == "2"  # the limit closest to exhaustion
        assert first.headers["RateLimit-Remaining"] == "1"
        assert (await c.get("/test/limited", **_as(client_ip))).status_code == 200
        refused = [(await c.get("/test/limited", **_as(client_ip))) for _ in range(3)]
        assert [r.status_code for r in refused] == [429] * 3
        assert refused[0].headers["RateLimit-Limit"] == "2"
        minute_key = f"{TEST_KEY_PREFIX}:rl:{{{client_ip}}}:/test/limited:4/60s:"
        # two counted requests at 15 s each: the refused ones left the minute limit alone
        assert 25_000 < redis_sync.Redis(port=6379).pttl(minute_key) <= 30_000
        for _ in range(3):
            response = await c.get("/test/exempt", **_as(client_ip))
            assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


async def test_refused_request_does_not_claim_its_idempotency_key(client_ip, prefix):
    key = f"idem-{uuid.uuid4().hex}"
    async with running_app(**dict(REDIS, rate_limit_default=1)) as (_, c):
        assert (await c.get(f"/examples/cache/{prefix}", **_as(client_ip))).status_code == 200
        refused = await c.post(
            f"/examples/cache/{prefix}?value=v", headers={"Idempotency-Key": key}, **_as(client_ip)
        )
        assert refused.status_code == 429
        assert redis_sync.Redis(port=6379).exists(_idempotency_record(key)) == 0
        # Not claimed: the same key from another client is served afresh (a claim would
        # make it a 409 while running, a replay once stored).
        other = client_ip + "9"
        accepted = await c.post(
            f"/examples/cache/{prefix}?value=v", headers={"Idempotency-Key": key}, **_as(other)
        )
        assert accepted.status_code == 200 and "Idempotency-Replayed" not in accepted.headers
    redis_sync.Redis(port=6379).delete(_idempotency_record(key))


async def test_response_cache_is_shared_by_two_app_instances():
    redis_sync.Redis(port=6379).delete(f"{TEST_KEY_PREFIX}:resp:/health/all")
    async with running_app(**REDIS) as (_, first), running_app(**REDIS) as (_, second):
        miss = await first.get("/health/all")
        assert miss.headers["X-Cache"] == "MISS"
        assert miss.headers["Cache-Control"] == "public, max-age=30"
        hit = await second.get("/health/all")
        assert hit.headers["X-Cache"] == "HIT" and hit.headers["ETag"] == miss.headers["ETag"]
        assert await hit.get_data() == await miss.get_data()
        not_modified = await second.get(
            "/health/all", headers={"If-None-Match": miss.headers["ETag"]}
        )
        assert not_modified.status_code == 304


async def test_invalidation_scans_in_batches_without_keys():
    """KEYS is disabled on this server: invalidation must use SCAN."""
    with private_redis_server("--rename-command", "KEYS", '""') as port:
        direct = redis_sync.Redis(port=port)
        with contextlib.suppress(redis_sync.ResponseError):
            direct.execute_command("KEYS", "*")
            raise AssertionError("KEYS should be disabled on this server")
        with direct.pipeline(transaction=False) as pipe:
            for i in range(1200):
                pipe.set(f"{TEST_KEY_PREFIX}:resp:/examples/vault/secret/s{i}", "{}", ex=300)
            pipe.set(f"{TEST_KEY_PREFIX}:resp:/health/all", "{}", ex=300)
            pipe.execute()
        async with running_app(redis_host="127.0.0.1", redis_port=port) as (_, c):
            before = metric_value("cache_invalidations_total", pattern="/examples/vault/secret/*")
            response = await c.delete("/redis/cache/responses?pattern=/examples/vault/*")
            assert response.status_code == 200
            assert await response.get_json() == {"pattern": "/examples/vault/*", "deleted": 1200}
            after = metric_value("cache_invalidations_total", pattern="/examples/vault/secret/*")
            assert after == before + 1200
            assert direct.dbsize() == 1  # /health/all is left alone
            for pattern in ("/examples/database/*", "/nothing"):
                bad = await c.delete(f"/redis/cache/responses?pattern={pattern}")
                assert bad.status_code == 422 and bad.content_type == PROBLEM
                body = await bad.get_json()
                assert body["type"] == "/problems/validation-error"
                assert body["errors"][0]["field"] == "pattern"
        settings = dict(redis_host="127.0.0.1", redis_port=port, response_cache_enabled=False)
        async with running_app(**settings) as (_, c):
            disabled = await c.delete("/redis/cache/responses?pattern=/health/all")
            assert disabled.status_code == 409 and disabled.content_type == PROBLEM
            assert (await disabled.get_json())["type"] == "/problems/cache-disabled"


async def test_idempotency_fails_open_cleanly_on_redis_6(prefix):
    """Redis 6 refuses SET NX GET: keyed POSTs are processed, counted, logged once, no 500."""
    async with FakeRedis6() as fake:
        settings = dict(redis_host="127.0.0.1", redis_port=fake.port)
        async with running_app(**settings) as (_, c):
            before = metric_value("idempotency_not_enforced_total", reason="unsupported_server")
            with captured_json_logs() as logs:
                for value in ("one", "two", "three"):
                    response = await c.post(
                        f"/examples/cache/{prefix}?value={value}",
                        headers={"Idempotency-Key": f"idem-{prefix}"},
                    )
                    assert response.status_code == 200, await response.get_data()
                    assert "Idempotency-Replayed" not in response.headers
            after = metric_value("idempotency_not_enforced_total", reason="unsupported_server")
            assert after == before + 3
            assert logs.getvalue().count("idempotency not enforced") == 1
            assert fake.data[prefix.encode()] == b"three"


async def test_a_response_too_large_to_keep_stores_status_and_digest(prefix):
    key = f"idem-{uuid.uuid4().hex}"
    value = "v" * 500
    async with running_app(**REDIS, idempotency_max_stored_bytes=100) as (_, c):
        first = await c.post(f"/examples/cache/{prefix}?value={value}", headers={HEADER: key})
        assert first.status_code == 200
        body = await first.get_data()
        assert len(body) > 500
        record = json.loads(redis_sync.Redis(port=6379).get(_idempotency_record(key)))
        assert "body" not in record and record["status"] == 200
        assert len(json.dumps(record)) < 400  # the body is not in Redis
        retry = await c.post(f"/examples/cache/{prefix}?value={value}", headers={HEADER: key})
        assert retry.status_code == 409 and retry.content_type == PROBLEM
        assert (await retry.get_json())["type"] == "/problems/idempotency-response-not-stored"
        assert retry.headers["Idempotency-Original-Status"] == "200"
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert retry.headers["Idempotency-Original-Digest"] == f"sha-256=:{digest}:"
    redis_sync.Redis(port=6379).delete(prefix, _idempotency_record(key))
