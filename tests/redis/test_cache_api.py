"""The cache API against the machine's Redis on :6379."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

import redis as redis_sync
from quartstack.settings import SettingsError, load_settings
from tests.redis.conftest import private_redis_server
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.polling import wait_until

PROBLEM = "application/problem+json"
REDIS = dict(redis_host="127.0.0.1", redis_port=6379)


def _as(ip):
    return {"scope_base": {"client": (ip, 40000)}}


async def test_set_get_ttl_delete_and_expiry(prefix):
    direct = redis_sync.Redis(port=6379, decode_responses=True)
    async with running_app(**REDIS) as (_, c):
        key = f"{prefix}:a"
        written = await c.post(f"/examples/cache/{key}?value=hello&ttl=100")
        assert written.status_code == 200
        assert await written.get_json() == {
            "key": key,
            "value": "hello",
            "ttl": 100,
            "action": "set",
        }
        assert direct.get(key) == "hello" and 0 < direct.ttl(key) <= 100
        read = await (await c.get(f"/examples/cache/{key}")).get_json()
        assert read["value"] == "hello" and read["exists"] is True
        assert read["encoding"] == "utf-8"
        assert 95 <= read["ttl"] <= 100

        forever = f"{prefix}:b"
        await c.post(f"/examples/cache/{forever}?value=x")
        assert (await (await c.get(f"/examples/cache/{forever}")).get_json())["ttl"] == (
            "no expiration"
        )
        missing = await (await c.get(f"/examples/cache/{prefix}:missing")).get_json()
        assert missing == {
            "key": f"{prefix}:missing",
            "value": None,
            "encoding": None,
            "exists": False,
            "ttl": None,
        }

        short = f"{prefix}:c"
        await c.post(f"/examples/cache/{short}?value=gone&ttl=1")
        assert 0 < direct.pttl(short) <= 1000

        async def expired() -> bool:
            return (await (await c.get(f"/examples/cache/{short}")).get_json())["exists"] is False

        await wait_until(expired, what="the 1 s TTL expiring")

        deleted = await c.delete(f"/examples/cache/{forever}")
        assert await deleted.get_json() == {"key": forever, "deleted": True, "action": "delete"}
        again = await c.delete(f"/examples/cache/{forever}")
        assert (await again.get_json())["deleted"] is False
        direct.delete(key)


async def test_validation_problems(prefix):
    async with running_app(**REDIS) as (_, c):
        cases = [
            ("GET", "/examples/cache/bad%20key", "path.key"),
            ("GET", "/examples/cache/" + "k" * 201, "path.key"),
            ("POST", f"/examples/cache/{prefix}?value=v&ttl=0", "ttl"),
            ("POST", f"/examples/cache/{prefix}?value=v&ttl=86401", "ttl"),
            ("POST", f"/examples/cache/{prefix}?value=v&ttl=abc", "ttl"),
            ("POST", f"/examples/cache/{prefix}?value=" + "v" * 10001, "value"),
            ("POST", f"/examples/cache/{prefix}", "value"),
        ]
        for method, path, field in cases:
            response = await c.open(path, method=method)
            assert response.status_code == 422, path
            assert response.content_type == PROBLEM
            body = await response.get_json()
            assert body["type"] == "/problems/validation-error"
            assert any(e["field"] == field for e in body["errors"]), body


async def test_cluster_routes_are_409_on_standalone():
    async with running_app(**REDIS) as (_, c):
        for path in ["/redis/cluster/nodes", "/redis/cluster/slots", "/redis/cluster/info"]:
            response = await c.get(path)
            assert response.status_code == 409
            assert response.content_type == PROBLEM
            assert (await response.get_json())["type"] == "/problems/not-a-cluster"
        info = await c.get("/redis/nodes/redis-1/info")
        assert info.status_code == 200
        assert (await info.get_json())["info"]["tcp_port"] == 6379
        unknown = await c.get("/redis/nodes/redis-9/info")
        assert unknown.status_code == 404 and unknown.content_type == PROBLEM
        assert (await unknown.get_json())["type"] == "/problems/unknown-node"
        health = await (await c.get("/health/redis")).get_json()
        assert health["cluster_enabled"] is False and health["total_nodes"] == 1
        assert health["nodes"][0]["status"] == "healthy"


async def test_redis_not_configured_is_503():
    async with running_app() as (_, c):
        response = await c.get("/examples/cache/k")
        assert response.status_code == 503
        assert response.content_type == PROBLEM
        assert (await response.get_json())["type"] == "/problems/backend-not-configured"


async def test_non_string_key_is_409(prefix):
    key = f"{prefix}:list"
    redis_sync.Redis(port=6379).rpush(key, "a", "b")
    async with running_app(**REDIS) as (_, c):
        response = await c.get(f"/examples/cache/{key}")
        assert response.status_code == 409
        assert response.content_type == PROBLEM
        body = await response.get_json()
        assert body["type"] == "/problems/wrong-type" and body["status"] == 409
        assert body["instance"] == f"/examples/cache/{key}"
        overwritten = await c.post(f"/examples/cache/{key}?value=now-a-string")
        assert overwritten.status_code == 200
        assert (await (await c.get(f"/examples/cache/{key}")).get_json())["value"] == (
            "now-a-string"
        )


def test_redis_nodes_setting_is_checked():
    assert load_settings(redis_nodes="a=10.0.0.1:7000,10.0.0.2:7001").redis_nodes == [
        "a=10.0.0.1:7000",
        "10.0.0.2:7001",
    ]
    for bad in ("10.0.0.1", "a=h:0", "a=h:x", "redis://:pw@h:1", "a=h:1,a=h:2"):
        with pytest.raises(SettingsError) as raised:
            load_settings(redis_nodes=bad)
        assert "REDIS_NODES" in str(raised.value)
        assert "pw" not in str(raised.value)


def _redis_password_from_vault(port: int, vault_server) -> dict[str, object]:
    """Settings for an app on the private Redis at ``port`` whose password (``redis-1``)
    comes from the session OpenBao."""
    return dict(
        redis_host="127.0.0.1",
        redis_port=port,
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
    )


async def test_password_from_vault_and_rotation(private_redis, vault_server):
    direct = redis_sync.Redis(port=private_redis, decode_responses=True)
    direct.config_set("requirepass", "first-secret-pw")
    settings = _redis_password_from_vault(private_redis, vault_server)
    try:
        vault_server.write_secret("redis-1", {"password": "first-secret-pw"})
        with captured_json_logs() as logs:
            async with running_app(**settings) as (_, c):
                assert (await c.post("/examples/cache/k?value=v1")).status_code == 200
                authed = redis_sync.Redis(port=private_redis, password="first-secret-pw")
                authed.config_set("requirepass", "second-secret-pw")
                vault_server.write_secret("redis-1", {"password": "second-secret-pw"})
                authed.close()
                authed = redis_sync.Redis(port=private_redis, password="second-secret-pw")
                authed.client_kill_filter(_type="normal", skipme=True)
                response = await c.get("/examples/cache/k")
                assert response.status_code == 200, await response.get_data()
                assert (await response.get_json())["value"] == "v1"
                assert (await c.get("/health/redis")).status_code == 200
        text = logs.getvalue()
        assert "first-secret-pw" not in text and "second-secret-pw" not in text
    finally:
        vault_server.delete_secret("redis-1")


async def test_wrong_password_is_503_without_the_secret(private_redis, vault_server):
    redis_sync.Redis(port=private_redis).config_set("requirepass", "the-right-pw")
    settings = _redis_password_from_vault(private_redis, vault_server)
    try:
        vault_server.write_secret("redis-1", {"password": "a-wrong-pw-123"})
        with captured_json_logs() as logs:
            async with running_app(**settings) as (_, c):
                response = await c.get("/examples/cache/k")
                assert response.status_code == 503
                assert response.content_type == PROBLEM
                body = await response.get_json()
                assert body["type"] == "/problems/backend-unavailable"
                assert "Retry-After" in response.headers
                health = await c.get("/health/redis")
                assert health.status_code == 503
                health_text = (await health.get_data()).decode()
        for text in (json.dumps(body), health_text, logs.getvalue()):
            assert "a-wrong-pw-123" not in text and "the-right-pw" not in text
    finally:
        vault_server.delete_secret("redis-1")


async def test_error_replies_that_mean_not_serving_are_503_not_500():
    """A replica refuses writes (READONLY), as a demoted master does after a failover."""
    with private_redis_server() as master, private_redis_server() as replica:
        redis_sync.Redis(port=replica).replicaof("127.0.0.1", master)
        settings = dict(redis_host="127.0.0.1", redis_port=replica, circuit_failure_threshold=2)
        async with running_app(**settings) as (_, c):
            for _ in range(2):
                response = await c.post("/examples/cache/k?value=v")
                assert response.status_code == 503, await response.get_data()
                assert response.content_type == PROBLEM
                assert (await response.get_json())["type"] == "/problems/backend-unavailable"
            opened = await c.get("/examples/cache/k")  # a failure for the breaker, too
            assert opened.status_code == 503
            assert (await opened.get_json())["type"] == "/problems/circuit-open"


async def test_binary_values_are_base64_and_never_open_the_circuit(prefix, client_ip):
    """A value that is not UTF-8 (written by another application) is the data, not a Redis
    failure: 30 concurrent reads answer it as base64, the circuit stays closed, and the
    rate limiter keeps refusing (an open circuit would make it fail open)."""
    binary, text = f"{prefix}:bin", f"{prefix}:text"
    direct = redis_sync.Redis(port=6379)
    direct.set(binary, b"\xff\xfe")
    direct.set(text, "h\u00e9llo".encode())
    settings = dict(REDIS, rate_limit_enabled=True, rate_limit_default=3)
    async with running_app(**settings) as (app, c):
        failures = metric_value("circuit_breaker_failures_total", service="redis")
        reads = await asyncio.gather(
            *(c.get(f"/examples/cache/{binary}", **_as(f"{client_ip}{i}")) for i in range(30))
        )
        for read in reads:
            assert read.status_code == 200, await read.get_data()
            body = await read.get_json()
            assert body["encoding"] == "base64" and base64.b64decode(body["value"]) == b"\xff\xfe"
        assert app.extensions["redis"].guard.state == "closed"
        assert metric_value("circuit_breaker_failures_total", service="redis") == failures
        statuses = [(await c.get("/", **_as(client_ip))).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        plain = await (await c.get(f"/examples/cache/{text}", **_as(client_ip + "9"))).get_json()
        assert plain["value"] == "h\u00e9llo" and plain["encoding"] == "utf-8"


async def test_concurrent_requests_across_a_rotation_all_succeed(private_redis, vault_server):
    """20 requests notice the rotated password at once: the client is rebuilt once, and
    no request closes the fresh client another one is using (five rotations in a row, as
    the race does not show every time)."""
    direct = redis_sync.Redis(port=private_redis, decode_responses=True)
    direct.config_set("requirepass", "rot-0-pw")
    settings = dict(_redis_password_from_vault(private_redis, vault_server), redis_pool_max=30)
    try:
        vault_server.write_secret("redis-1", {"password": "rot-0-pw"})
        async with running_app(**settings) as (_, c):
            for rotation in range(1, 6):
                warm = await asyncio.gather(*(c.get("/examples/cache/rot") for _ in range(20)))
                assert {r.status_code for r in warm} == {200}
                old, new = f"rot-{rotation - 1}-pw", f"rot-{rotation}-pw"
                with redis_sync.Redis(port=private_redis, password=old) as authed:
                    authed.config_set("requirepass", new)
                vault_server.write_secret("redis-1", {"password": new})
                with redis_sync.Redis(port=private_redis, password=new) as authed:
                    authed.client_kill_filter(_type="normal", skipme=True)  # every pooled one
                responses = await asyncio.gather(
                    *(c.post(f"/examples/cache/rot{i}?value={rotation}") for i in range(20))
                )
                statuses = [r.status_code for r in responses]
                assert statuses == [200] * 20, (rotation, statuses)
            reads = await asyncio.gather(*(c.get(f"/examples/cache/rot{i}") for i in range(20)))
            assert {(await r.get_json())["value"] for r in reads} == {"5"}
    finally:
        vault_server.delete_secret("redis-1")
