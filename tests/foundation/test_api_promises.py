"""Promises README makes about the API: the root summary, /redoc, the access log's
``error_type`` and 503 for a Redis route without Redis (in-process, real Redis where used)."""

from __future__ import annotations

import json

from tests.support.app import captured_json_logs, running_app

PROBLEM = "application/problem+json"


async def test_root_summarises_security_and_the_redis_mode():
    settings = dict(cors_origins=["https://ok.example"], rate_limit_default=42)
    async with running_app(**settings) as (_, c):
        root = await (await c.get("/")).get_json()
    assert root["redoc"] == "/redoc" and root["note"]
    security = root["security"]
    assert security["cors"] == {
        "mode": "allow-list",
        "origins": ["https://ok.example"],
        "credentials": True,
    }
    assert security["rate_limits"]["per_minute"]["default"] == 42
    assert security["rate_limits"]["enabled"] is False  # no Redis: nothing is limited
    assert "/health/live" in security["rate_limits"]["exempt"]
    assert security["headers"]["x-frame-options"] == "DENY"
    assert security["headers"]["content-security-policy"].startswith("default-src 'none'")
    cluster = root["redis_cluster"]
    assert cluster["mode"] == "not configured"
    assert cluster["routes"]["slots"] == "/redis/cluster/slots"

    async with running_app(
        debug=True, rate_limit_enabled=True, redis_host="127.0.0.1", redis_port=6379
    ) as (_, c):
        root = await (await c.get("/")).get_json()
    assert root["security"]["cors"]["mode"] == "any-origin"
    assert root["security"]["rate_limits"]["enabled"] is True
    assert root["security"]["rate_limits"]["store"] == "redis"
    assert "strict-transport-security" not in root["security"]["headers"]
    assert root["redis_cluster"]["mode"] == "standalone"


async def test_redoc_page_with_the_docs_csp():
    async with running_app() as (_, c):
        page = await c.get("/redoc")
        assert page.status_code == 200
        assert "<redoc spec-url=" in (await page.get_data()).decode()
        csp = page.headers["Content-Security-Policy"]
        assert "https://cdn.jsdelivr.net" in csp and "worker-src 'self' blob:" in csp
        strict = (await c.get("/health/")).headers["Content-Security-Policy"]
        assert strict.startswith("default-src 'none'")


async def test_access_log_has_error_type_only_on_errors():
    async with running_app() as (_, c):
        with captured_json_logs() as logs:
            await c.get("/health/", headers={"X-Request-ID": "ok-1"})
            await c.get("/no/such/route", headers={"X-Request-ID": "missing-1"})
            await c.get("/examples/cache/k", headers={"X-Request-ID": "down-1"})
    access = {
        entry["request_id"]: entry
        for entry in map(json.loads, logs.getvalue().splitlines())
        if entry.get("logger") == "quartstack.access"
    }
    assert access["ok-1"]["status"] == 200
    assert "error_type" not in access["ok-1"]
    assert access["missing-1"]["error_type"] == "not-found"
    assert access["down-1"]["error_type"] == "backend-not-configured"


async def test_invalidating_cached_responses_without_redis_is_503_not_configured():
    async with running_app() as (_, c):
        response = await c.delete("/redis/cache/responses?pattern=/health/all")
    assert response.status_code == 503 and response.content_type == PROBLEM
    assert (await response.get_json())["type"] == "/problems/backend-not-configured"
    assert response.headers["Retry-After"]
