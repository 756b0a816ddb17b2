"""REDIS_KEY_PREFIX: two deployments sharing one Redis never share state."""

from __future__ import annotations

import uuid

import pytest

import redis as redis_sync
from quartstack.settings import SettingsError, load_settings
from tests.support.app import TEST_KEY_PREFIX, running_app

REDIS = dict(redis_host="127.0.0.1", redis_port=6379)


def _as(ip):
    return {"scope_base": {"client": (ip, 40000)}}


def _namespaces(key_prefix: str) -> set[str]:
    """The kinds of key (``rl``, ``idem``, ``resp``) written under ``key_prefix``."""
    keys = redis_sync.Redis(port=6379, decode_responses=True).scan_iter(f"{key_prefix}:*")
    return {key.removeprefix(f"{key_prefix}:").split(":", 1)[0] for key in keys}


async def test_two_prefixes_on_one_redis_share_nothing(client_ip, prefix):
    first = f"{TEST_KEY_PREFIX}:a{uuid.uuid4().hex[:8]}"
    second = f"{TEST_KEY_PREFIX}:b{uuid.uuid4().hex[:8]}"
    common = dict(REDIS, rate_limit_enabled=True, rate_limit_default=2)
    async with (
        running_app(**common, redis_key_prefix=first) as (_, a),
        running_app(**common, redis_key_prefix=second) as (_, b),
    ):
        # cached responses: B does not answer A's cached body
        assert (await a.get("/health/all", **_as(client_ip))).headers["X-Cache"] == "MISS"
        assert (await a.get("/health/all", **_as(client_ip + "1"))).headers["X-Cache"] == "HIT"
        assert (await b.get("/health/all", **_as(client_ip))).headers["X-Cache"] == "MISS"
        # rate-limit buckets: A's client is exhausted, the same client at B is not
        statuses = [(await a.get("/", **_as(client_ip))).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await b.get("/", **_as(client_ip))).status_code == 200
        # idempotency records: the same key at B is a new request, not a replay or a 422
        key = f"idem-{uuid.uuid4().hex}"
        ip = client_ip + "2"
        one = await a.post(
            f"/examples/cache/{prefix}?value=one", headers={"Idempotency-Key": key}, **_as(ip)
        )
        two = await b.post(
            f"/examples/cache/{prefix}?value=two", headers={"Idempotency-Key": key}, **_as(ip)
        )
        assert one.status_code == two.status_code == 200
        assert "Idempotency-Replayed" not in two.headers
        assert (await two.get_json())["value"] == "two"
    assert _namespaces(first) == _namespaces(second) == {"rl", "idem", "resp"}


def test_key_prefix_setting():
    assert load_settings(redis_key_prefix="my-release").redis_key_prefix == "my-release"
    for bad in ("", "a*", "a{b}", "has space", "x" * 65):
        with pytest.raises(SettingsError) as raised:
            load_settings(redis_key_prefix=bad)
        assert "REDIS_KEY_PREFIX" in str(raised.value)


def test_key_prefix_defaults_to_quartstack(monkeypatch):
    monkeypatch.delenv("REDIS_KEY_PREFIX", raising=False)
    assert load_settings().redis_key_prefix == "quartstack"
