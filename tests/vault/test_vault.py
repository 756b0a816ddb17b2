"""Vault integration against the Vault-API test server over real HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.net import TcpProxy, free_port

PROBLEM = "application/problem+json"
SECRET = {
    "user": "svc-user",
    "password": "pw-" + uuid.uuid4().hex,
    "api_key": "key-" + uuid.uuid4().hex,
    "client_secret": "cs-" + uuid.uuid4().hex,
    "auth_token": "tok-" + uuid.uuid4().hex,
    "enabled": True,
    "port": 5432,
    "ratio": 0.5,
    "nothing": None,
}


def _fast(**overrides):
    settings = dict(
        vault_cache_ttl_seconds=0,
        vault_timeout_seconds=2,
        vault_login_attempts=2,
        retry_base_delay_seconds=0.01,
        retry_max_delay_seconds=0.05,
    )
    settings.update(overrides)
    return settings


async def test_approle_login_reads_and_masks_secret(vault, approle):
    vault.write_secret("billing", SECRET)
    role_dir = approle()
    with captured_json_logs() as logs:
        async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
            _app,
            client,
        ):
            assert (await client.get("/health/startup")).status_code == 200
            response = await client.get("/examples/vault/secret/billing")
            assert response.status_code == 200
            body = await response.get_json()
            assert body["service"] == "billing"
            assert body["data"] == {
                "user": "svc-user",
                "password": "***",
                "api_key": "***",
                "client_secret": "***",
                "auth_token": "***",
                "enabled": True,
                "port": 5432,
                "ratio": 0.5,
                "nothing": None,
            }
            for key, expected in [
                ("enabled", True),
                ("port", 5432),
                ("user", "svc-user"),
                ("password", "***"),
                ("api_key", "***"),
            ]:
                one = await client.get(f"/examples/vault/secret/billing/{key}")
                assert one.status_code == 200
                assert (await one.get_json())["value"] == expected
            health = await client.get("/health/vault")
            assert health.status_code == 200
            assert (await health.get_json())["details"] == {
                "initialized": True,
                "sealed": False,
                "standby": False,
            }
    text = logs.getvalue()
    secret_id = (role_dir / "secret-id").read_text().strip()
    for value in [
        SECRET["password"],
        SECRET["api_key"],
        SECRET["client_secret"],
        SECRET["auth_token"],
        secret_id,
    ]:
        assert value not in text
    assert "vault login succeeded" in text


async def test_token_fallback(vault):
    vault.write_secret("orders", {"user": "o"})
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        response = await c.get("/examples/vault/secret/orders")
        assert response.status_code == 200
        assert (await response.get_json())["data"] == {"user": "o"}


async def test_missing_secret_and_key_are_404_problems(vault):
    vault.write_secret("present", {"a": 1})
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        for path, kind in [
            ("/examples/vault/secret/absent", "secret-not-found"),
            ("/examples/vault/secret/present/b", "secret-key-not-found"),
        ]:
            response = await c.get(path)
            assert response.status_code == 404
            assert response.content_type == PROBLEM
            body = await response.get_json()
            assert body["type"] == f"/problems/{kind}"
            assert body["status"] == 404 and body["instance"] == path and body["request_id"]


async def test_invalid_names_are_422_problems(vault):
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        for path, field in [
            ("/examples/vault/secret/bad%20name", "path.service_name"),
            ("/examples/vault/secret/" + "a" * 51, "path.service_name"),
            ("/examples/vault/secret/ok/" + "k" * 101, "path.key"),
        ]:
            response = await c.get(path)
            assert response.status_code == 422, path
            assert response.content_type == PROBLEM
            body = await response.get_json()
            assert body["errors"][0]["field"] == field


async def test_short_ttl_token_stays_valid_through_renewal(vault, approle):
    vault.write_secret("renew", {"v": 1})
    role_dir = approle(token_ttl=3, token_max_ttl=600, renewable=True)
    before = metric_value("vault_token_renewals_total", result="renewed")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = await c.get("/examples/vault/secret/renew")
            assert response.status_code == 200, await response.get_data()
            await asyncio.sleep(0.25)
    assert metric_value("vault_token_renewals_total", result="renewed") - before >= 3


async def test_non_renewable_token_is_replaced_by_login(vault, approle):
    vault.write_secret("relogin", {"v": 1})
    role_dir = approle(token_ttl=2, token_max_ttl=600, renewable=False)
    before = metric_value("vault_token_renewals_total", result="relogin")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert (await c.get("/examples/vault/secret/relogin")).status_code == 200
            await asyncio.sleep(0.25)
    assert metric_value("vault_token_renewals_total", result="relogin") - before >= 2


async def test_forbidden_triggers_one_relogin_and_retry(vault, approle):
    vault.write_secret("expired", {"v": 2})
    role_dir = approle(token_ttl=3600)
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        assert (await c.get("/examples/vault/secret/expired")).status_code == 200
        vault.expire_tokens()
        response = await c.get("/examples/vault/secret/expired")
        assert response.status_code == 200
        assert (await response.get_json())["data"] == {"v": 2}


async def test_wrong_secret_id_keeps_service_up_with_startup_503(vault, approle):
    role_dir = approle()
    bad_secret_id = "wrong-" + uuid.uuid4().hex
    (role_dir / "secret-id").write_text(bad_secret_id)
    with captured_json_logs() as logs:
        async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
            _,
            c,
        ):
            startup = await c.get("/health/startup")
            assert startup.status_code == 503
            assert (await startup.get_json())["status"] == "starting"
            assert (await c.get("/health/live")).status_code == 200
            ready = await c.get("/health/ready")
            assert ready.status_code == 503
            response = await c.get("/examples/vault/secret/anything")
            assert response.status_code == 503
            assert response.content_type == PROBLEM
            assert bad_secret_id not in (await response.get_data(as_text=True))
    text = logs.getvalue()
    assert "vault rejected the service's credentials" in text
    assert bad_secret_id not in text


async def test_rotated_secret_id_file_is_used_at_next_login(vault, approle):
    vault.write_secret("rotated", {"v": 3})
    role_dir = approle()
    good = (role_dir / "secret-id").read_text()
    (role_dir / "secret-id").write_text("wrong")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        assert (await c.get("/health/startup")).status_code == 503
        (role_dir / "secret-id").write_text(good)
        response = await c.get("/examples/vault/secret/rotated")
        assert response.status_code == 200
        assert (await c.get("/health/startup")).status_code == 200


async def test_vault_unreachable_service_starts_degraded():
    port = free_port()
    async with running_app(
        **_fast(
            vault_addr=f"http://127.0.0.1:{port}",
            vault_token="t-" + uuid.uuid4().hex,
            required_backends=["vault"],
        )
    ) as (_, c):
        assert (await c.get("/health/startup")).status_code == 200
        ready = await c.get("/health/ready")
        assert ready.status_code == 503
        assert (await ready.get_json())["checks"]["vault"].startswith("unhealthy")
        response = await c.get("/examples/vault/secret/x")
        assert response.status_code == 503
        assert response.content_type == PROBLEM
        assert response.headers["Retry-After"]
        assert (await c.get("/health/vault")).status_code == 503


async def test_circuit_opens_half_opens_and_closes(vault):
    vault.write_secret("flaky", {"v": 1})
    with TcpProxy(vault.port) as proxy:
        settings = _fast(
            vault_addr=f"http://127.0.0.1:{proxy.port}",
            vault_token=vault.root_token,
            circuit_failure_threshold=3,
            circuit_recovery_seconds=1,
        )
        async with running_app(**settings) as (_, c):
            assert (await c.get("/examples/vault/secret/flaky")).status_code == 200
            opened = metric_value("circuit_breaker_opened_total", service="vault")
            proxy.set_mode("refuse")
            proxy.close_connections()
            kinds = []
            for _ in range(5):
                response = await c.get("/examples/vault/secret/flaky")
                assert response.status_code == 503
                assert response.content_type == PROBLEM
                kinds.append((await response.get_json())["type"])
            assert kinds[-1] == "/problems/circuit-open"
            assert "/problems/backend-unavailable" in kinds[:3]
            assert metric_value("circuit_breaker_state", service="vault") == 2
            assert metric_value("circuit_breaker_opened_total", service="vault") == opened + 1
            proxy.set_mode("pass")
            await asyncio.sleep(1.2)
            half = metric_value("circuit_breaker_half_open_total", service="vault")
            closed = metric_value("circuit_breaker_closed_total", service="vault")
            assert (await c.get("/examples/vault/secret/flaky")).status_code == 200
            assert metric_value("circuit_breaker_half_open_total", service="vault") == half + 1
            assert metric_value("circuit_breaker_closed_total", service="vault") == closed + 1
            assert metric_value("circuit_breaker_state", service="vault") == 0


async def test_sealed_vault_is_503(vault):
    vault.write_secret("sealed", {"v": 1})
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        vault.set_sealed(True)
        try:
            response = await c.get("/examples/vault/secret/sealed")
            assert response.status_code == 503
            assert response.content_type == PROBLEM
            health = await c.get("/health/vault")
            assert health.status_code == 503
            assert (await health.get_json())["status"] == "unhealthy"
        finally:
            vault.set_sealed(False)
        assert (await c.get("/examples/vault/secret/sealed")).status_code == 200


async def test_slow_vault_is_504(vault):
    vault.write_secret("slow", {"v": 1})
    async with running_app(
        **_fast(vault_addr=vault.url, vault_token=vault.root_token, vault_timeout_seconds=0.5)
    ) as (_, c):
        vault.set_latency(1.5)
        try:
            response = await c.get("/examples/vault/secret/slow")
        finally:
            vault.set_latency(0)
        assert response.status_code == 504
        assert response.content_type == PROBLEM
        assert (await response.get_json())["type"] == "/problems/backend-timeout"


async def test_cache_and_single_flight(vault):
    vault.write_secret("hot", {"v": 1})
    async with running_app(
        vault_addr=vault.url, vault_token=vault.root_token, vault_cache_ttl_seconds=60
    ) as (_, c):
        vault.set_latency(0.3)
        vault.request_counts(reset=True)
        try:
            responses = await asyncio.gather(
                *(c.get("/examples/vault/secret/hot") for _ in range(20))
            )
        finally:
            vault.set_latency(0)
        assert all(r.status_code == 200 for r in responses)
        for _ in range(10):
            assert (await c.get("/examples/vault/secret/hot")).status_code == 200
        assert vault.request_counts().get("/v1/secret/data/hot") == 1


async def test_credentials_come_from_vault(vault):
    from quartstack.integrations.vault.credentials import credential_provider

    password = "pg-" + uuid.uuid4().hex
    vault.write_secret("postgres", {"user": "app", "password": password, "database": "db1"})
    vault.write_secret(
        "rabbitmq", {"user": "r", "password": "rp-" + uuid.uuid4().hex, "vhost": "/v"}
    )
    async with running_app(
        **_fast(vault_addr=vault.url, vault_token=vault.root_token, postgres_user="env-user")
    ) as (app, _):
        provider = credential_provider(app)
        creds = await provider.get("postgres")
        assert (creds.user, creds.password, creds.database) == ("app", password, "db1")
        assert password not in repr(creds)
        assert (await provider.get("rabbitmq")).vhost == "/v"
        vault.write_secret("postgres", {"user": "app", "password": "new-" + password})
        assert (await provider.refresh("postgres")).password == "new-" + password
