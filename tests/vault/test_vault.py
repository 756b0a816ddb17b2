"""Vault integration against a real Vault (an OpenBao server) over real HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from quartstack.integrations.vault.credentials import Credentials, credential_provider
from quartstack.resilience import BackendUnavailable
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.net import TcpProxy, free_port
from tests.support.polling import wait_until
from tests.support.process import ServiceProcess
from tests.support.vault import VaultHAPair, VaultTestServer

PROBLEM = "application/problem+json"
SECRET = {
    "user": "svc-user",
    "password": "pw-" + uuid.uuid4().hex,
    "api_key": "key-" + uuid.uuid4().hex,
    "client_secret": "cs-" + uuid.uuid4().hex,
    "auth_token": "tok-" + uuid.uuid4().hex,
    "pin_secret": 918273645,
    "enabled": True,
    "port": 5432,
    "ratio": 0.5,
    "nothing": None,
    "nested": {"db_password": "np-" + uuid.uuid4().hex, "host": "db.local"},
    "replicas": [{"host": "r1", "token": "rt-" + uuid.uuid4().hex}],
}
SECRET_VALUES = [
    SECRET["password"],
    SECRET["api_key"],
    SECRET["client_secret"],
    SECRET["auth_token"],
    str(SECRET["pin_secret"]),
    SECRET["nested"]["db_password"],  # type: ignore[index]
    SECRET["replicas"][0]["token"],  # type: ignore[index]
]


def _fast(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = dict(
        vault_cache_ttl_seconds=0,
        vault_timeout_seconds=2,
        vault_login_attempts=2,
        retry_base_delay_seconds=0.01,
        retry_max_delay_seconds=0.05,
    )
    settings.update(overrides)
    return settings


async def read_until(
    client: Any, path: str, done: Callable[[], bool], *, at_least: float, timeout: float = 60
) -> None:
    """Read ``path`` every 0.25 s, each read a 200, until ``at_least`` seconds have passed
    (a token lifetime: the subject of the test) and ``done()`` holds. The background
    renewal runs when the busy machine lets it, so its outcome is waited for, not assumed
    to have happened within a fixed window."""
    started = time.monotonic()
    while True:
        response = await client.get(path)
        assert response.status_code == 200, await response.get_data(as_text=True)
        elapsed = time.monotonic() - started
        if elapsed >= at_least and done():
            return
        assert elapsed < timeout, f"not done after {timeout} s of reads"
        await asyncio.sleep(0.25)


async def assert_problem(
    response: Any, status: int, kind: str | None = None, path: str | None = None
) -> dict[str, Any]:
    """Status, content type and the RFC 7807 fields every problem carries."""
    assert response.status_code == status
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.get_json()
    if kind is not None:
        assert body["type"] == f"/problems/{kind}"
    assert body["type"].startswith("/problems/")
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["instance"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    if path is not None:
        assert body["instance"] == path
    return body


def _app_token(app: Any) -> str:
    """The token the app's Vault client holds right now."""
    token: str = app.extensions["vault"]._client.token
    return token


# --- login, reads, masking ---------------------------------------------------------------
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
            assert "masked" in body["note"]
            assert body["data"] == {
                "user": "svc-user",
                "password": "***",
                "api_key": "***",
                "client_secret": "***",
                "auth_token": "***",
                "pin_secret": "***",
                "enabled": True,
                "port": 5432,
                "ratio": 0.5,
                "nothing": None,
                "nested": {"db_password": "***", "host": "db.local"},
                "replicas": [{"host": "r1", "token": "***"}],
            }
            for key, expected in [
                ("enabled", True),
                ("port", 5432),
                ("ratio", 0.5),
                ("nothing", None),
                ("user", "svc-user"),
                ("password", "***"),
                ("api_key", "***"),
                ("pin_secret", "***"),
                ("nested", {"db_password": "***", "host": "db.local"}),
            ]:
                one = await client.get(f"/examples/vault/secret/billing/{key}")
                assert one.status_code == 200
                assert await one.get_json() == {
                    "service": "billing",
                    "key": key,
                    "value": expected,
                    "note": body["note"],
                }
            health = await client.get("/health/vault")
            assert health.status_code == 200
            health_body = await health.get_json()
            assert health_body["status"] == "healthy"
            assert health_body["details"] == {
                "initialized": True,
                "sealed": False,
                "standby": False,
                "status": "healthy",
            }
    text = logs.getvalue()
    role_id = (role_dir / "role-id").read_text().strip()
    secret_id = (role_dir / "secret-id").read_text().strip()
    for value in [*SECRET_VALUES, role_id, secret_id]:
        assert value not in text
    assert "vault login succeeded" in text


async def test_token_fallback_with_a_short_ttl_token_is_renewed(vault):
    vault.write_secret("orders", {"user": "o"})
    token = vault.create_token(ttl=3)
    before = metric_value("vault_token_renewals_total", result="renewed")
    with captured_json_logs() as logs:
        async with running_app(**_fast(vault_addr=vault.url, vault_token=token)) as (_, c):
            await read_until(
                c,
                "/examples/vault/secret/orders",
                lambda: metric_value("vault_token_renewals_total", result="renewed") > before,
                at_least=4,  # past the token's first 3 s
            )
            response = await c.get("/examples/vault/secret/orders")
            assert (await response.get_json())["data"] == {"user": "o"}
    assert token not in logs.getvalue()


async def test_approle_token_is_revoked_on_shutdown_a_given_token_is_not(vault, approle):
    vault.write_secret("orders", {"user": "o"})
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(approle()))) as (
        app,
        c,
    ):
        assert (await c.get("/examples/vault/secret/orders")).status_code == 200
        token = _app_token(app)
        assert vault.lookup_token(token) is not None
        vault.request_counts(reset=True)
    assert vault.request_counts().get("/v1/auth/token/revoke-self") == 1
    assert vault.lookup_token(token) is None  # the server no longer knows the token

    given = vault.create_token(ttl=60)
    async with running_app(**_fast(vault_addr=vault.url, vault_token=given)) as (_, c):
        assert (await c.get("/examples/vault/secret/orders")).status_code == 200
        vault.request_counts(reset=True)
    assert "/v1/auth/token/revoke-self" not in vault.request_counts()
    assert vault.lookup_token(given) is not None  # still valid for whoever gave it to us


async def test_missing_secret_and_key_are_404_problems(vault):
    vault.write_secret("present", {"a": 1})
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        for path, kind in [
            ("/examples/vault/secret/absent", "secret-not-found"),
            ("/examples/vault/secret/present/b", "secret-key-not-found"),
            ("/examples/vault/secret/absent/b", "secret-not-found"),
        ]:
            await assert_problem(await c.get(path), 404, kind, path)


async def test_invalid_names_are_422_problems(vault):
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        for path, field in [
            ("/examples/vault/secret/bad%20name", "path.service_name"),
            ("/examples/vault/secret/bad.name", "path.service_name"),
            ("/examples/vault/secret/" + "a" * 51, "path.service_name"),
            ("/examples/vault/secret/ok/" + "k" * 101, "path.key"),
            ("/examples/vault/secret/ok/k%24y", "path.key"),
        ]:
            response = await c.get(path)
            body = await assert_problem(response, 422, "validation-error")
            assert body["errors"][0]["field"] == field, path
        # the limits themselves are accepted (and simply not found)
        ok = await c.get("/examples/vault/secret/" + "a" * 50 + "/" + "k" * 100)
        assert ok.status_code == 404


async def test_vault_mount_setting_selects_the_kv_mount(vault):
    vault.enable_kv_v2("team")
    vault.write_secret("app", {"user": "from-team"}, mount="team")
    vault.write_secret("app", {"user": "from-secret"})
    async with running_app(
        **_fast(vault_addr=vault.url, vault_token=vault.root_token, vault_mount="team")
    ) as (_, c):
        response = await c.get("/examples/vault/secret/app/user")
        assert (await response.get_json())["value"] == "from-team"


# --- token lifecycle -----------------------------------------------------------------------
async def test_token_is_renewed_at_two_thirds_of_its_ttl(vault, approle):
    """Observed on the server: the token's lookup shows its renewal time."""
    vault.write_secret("renew", {"v": 1})
    ttl = 9
    role_dir = approle(token_ttl=ttl, token_max_ttl=600, renewable=True)
    before = metric_value("vault_token_renewals_total", result="renewed")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        app,
        c,
    ):
        vault.request_counts(reset=True)
        token = _app_token(app)
        issued = vault.lookup_token(token)
        assert issued is not None and "last_renewal_time" not in issued
        renewals: list[int] = []
        deadline = time.monotonic() + 4 * ttl
        while len(renewals) < 2:
            assert time.monotonic() < deadline, f"renewals seen: {renewals}"
            response = await c.get("/examples/vault/secret/renew")
            assert response.status_code == 200, await response.get_data()
            seen = vault.lookup_token(token)
            assert seen is not None, "the token died: it was not renewed in time"
            last = seen.get("last_renewal_time")
            if last and (not renewals or last != renewals[-1]):
                renewals.append(int(last))
            await asyncio.sleep(0.2)
        counts = vault.request_counts()
    creation = int(issued["creation_time"])
    # the first renewal at ~2/3 of the TTL (the server's times have one-second resolution)
    assert ttl * 0.5 <= renewals[0] - creation <= ttl * 0.85, (creation, renewals)
    assert ttl * 0.5 <= renewals[1] - renewals[0] <= ttl * 0.85, renewals
    assert metric_value("vault_token_renewals_total", result="renewed") - before >= 2
    # renewal kept the one token alive: no login was needed
    assert counts.get("/v1/auth/approle/login", 0) == 0
    assert counts.get("/v1/auth/token/renew-self", 0) >= 2


async def test_non_renewable_token_is_replaced_by_login(vault, approle):
    vault.write_secret("relogin", {"v": 1})
    role_dir = approle(token_ttl=2, token_max_ttl=600, renewable=False)
    before = metric_value("vault_token_renewals_total", result="relogin")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        await read_until(
            c,
            "/examples/vault/secret/relogin",
            lambda: metric_value("vault_token_renewals_total", result="relogin") - before >= 2,
            at_least=3,  # past the first token's 2 s
        )


async def test_token_near_its_max_ttl_is_replaced_by_login(vault, approle):
    vault.write_secret("maxttl", {"v": 1})
    role_dir = approle(token_ttl=3, token_max_ttl=5, renewable=True)
    renewed = metric_value("vault_token_renewals_total", result="renewed")
    relogin = metric_value("vault_token_renewals_total", result="relogin")
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        app,
        c,
    ):
        first = _app_token(app)
        vault.request_counts(reset=True)
        deadline = time.monotonic() + 15
        while _app_token(app) == first:
            assert time.monotonic() < deadline, "no new login before the max TTL"
            assert (await c.get("/examples/vault/secret/maxttl")).status_code == 200
            await asyncio.sleep(0.2)
        assert vault.lookup_token(_app_token(app)) is not None
        assert (await c.get("/examples/vault/secret/maxttl")).status_code == 200
        counts = vault.request_counts()
    assert counts.get("/v1/auth/approle/login", 0) >= 1
    assert metric_value("vault_token_renewals_total", result="renewed") > renewed
    assert metric_value("vault_token_renewals_total", result="relogin") > relogin


async def test_forbidden_triggers_one_relogin_and_retry(vault, approle):
    names = [f"expired-{i}" for i in range(6)]
    for i, name in enumerate(names):
        vault.write_secret(name, {"v": i})
    role_dir = approle(token_ttl=3600)
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        _,
        c,
    ):
        assert (await c.get("/examples/vault/secret/expired-0")).status_code == 200
        vault.revoke_tokens()
        vault.request_counts(reset=True)
        responses = await asyncio.gather(*(c.get(f"/examples/vault/secret/{n}") for n in names))
        for i, response in enumerate(responses):
            assert response.status_code == 200
            assert (await response.get_json())["data"] == {"v": i}
        # six reads of different secrets met the expired token; they shared one login
        counts = vault.request_counts()
        assert counts["/v1/auth/approle/login"] == 1
        assert sum(counts.get(f"/v1/secret/data/{n}", 0) for n in names) == 2 * len(names)


async def test_a_login_by_another_call_during_the_403_check_means_retry_not_denial(
    vault, approle, monkeypatch
):
    """A 403 from a revoked token, and another call logs in before this one's lookup-self
    answers: the lookup then vouches for the new token, which says nothing about the
    refused one. The call must retry with the new token, not report a policy denial."""
    vault.write_secret("raced", {"v": 1})
    role_dir = approle(token_ttl=3600)
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        app,
        c,
    ):
        assert (await c.get("/examples/vault/secret/raced")).status_code == 200
        client = app.extensions["vault"]
        lookup = client._token_is_valid

        async def concurrent_login_first() -> bool:
            await client.login()  # what another request met by the revoked token does
            return await lookup()

        monkeypatch.setattr(client, "_token_is_valid", concurrent_login_first)
        vault.revoke_tokens()
        response = await c.get("/examples/vault/secret/raced")  # VAULT_CACHE_TTL_SECONDS=0
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert (await response.get_json())["data"] == {"v": 1}


async def test_policy_denial_is_a_403_problem_without_relogin_or_retry(vault, tmp_path):
    vault.write_secret("allowed", {"v": 1})
    vault.write_secret("denied", {"password": "dp-" + uuid.uuid4().hex})
    role_dir = vault.approle_dir(
        tmp_path / "approle", f"app-{uuid.uuid4().hex[:8]}", readable=["allowed"]
    )
    async with running_app(
        **_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir), circuit_failure_threshold=2)
    ) as (_, c):
        assert (await c.get("/examples/vault/secret/allowed")).status_code == 200
        vault.request_counts(reset=True)
        for _ in range(5):
            response = await c.get("/examples/vault/secret/denied")
            body = await assert_problem(response, 403, "secret-forbidden")
            assert "policy" in body["detail"]
            assert "Retry-After" not in response.headers
        counts = vault.request_counts()
        # one read per request, one lookup-self to tell a denial from a dead token
        assert counts.get("/v1/secret/data/denied") == 5
        assert counts.get("/v1/auth/token/lookup-self") == 5
        assert counts.get("/v1/auth/approle/login", 0) == 0
        assert metric_value("circuit_breaker_state", service="vault") == 0
        assert (await c.get("/examples/vault/secret/allowed")).status_code == 200
        assert (await c.get("/health/vault")).status_code == 200


async def test_wrong_secret_id_keeps_service_up_with_startup_503(vault, approle):
    role_dir = approle()
    role_id = (role_dir / "role-id").read_text().strip()
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
            assert (await ready.get_json())["checks"]["startup"] == "starting"
            response = await c.get("/examples/vault/secret/anything")
            body = await assert_problem(response, 503, "backend-unavailable")
            assert "rejected" in body["detail"]
            assert bad_secret_id not in (await response.get_data(as_text=True))
            health = await c.get("/health/vault")
            assert health.status_code == 503
    text = logs.getvalue()
    assert "vault rejected the service's credentials" in text
    assert bad_secret_id not in text
    assert role_id not in text


async def test_the_production_approle_reads_its_backend_secrets_and_nothing_else(
    vault_server: VaultTestServer, tmp_path
):
    """The session Vault's production-like role: a policy reading only the service's
    backend secrets, token and secret-id TTLs bounded."""
    password = "pg-" + uuid.uuid4().hex
    other = f"other-{uuid.uuid4().hex[:8]}"
    vault_server.write_secret("postgres", {"user": "app", "password": password})
    vault_server.write_secret(other, {"v": 1})
    role_dir = vault_server.service_approle_dir(tmp_path / "approle")
    role = ""
    try:
        async with running_app(
            **_fast(vault_addr=vault_server.url, vault_approle_dir=str(role_dir))
        ) as (app, c):
            assert (await credential_provider(app).get("postgres")).password == password
            await assert_problem(await c.get(f"/examples/vault/secret/{other}"), 403)
            token = vault_server.lookup_token(_app_token(app))
            assert token is not None and 0 < token["ttl"] <= 3600
            role = token["meta"]["role_name"]
            assert token["policies"] == ["default", role]
    finally:
        vault_server.delete_secret("postgres")
        vault_server.delete_secret(other)
        if role:
            vault_server.delete_approle(role)


def test_wrong_secret_id_in_a_served_process(vault_server: VaultTestServer, tmp_path):
    """The same through ``quartstack serve``: the process's own stderr is clean."""
    role_dir = vault_server.approle_dir(tmp_path / "approle", f"bad-{uuid.uuid4().hex[:8]}")
    role_id = (role_dir / "role-id").read_text().strip()
    bad_secret_id = "wrong-" + uuid.uuid4().hex
    (role_dir / "secret-id").write_text(bad_secret_id)
    env = {
        "VAULT_ADDR": vault_server.url,
        "VAULT_APPROLE_DIR": str(role_dir),
        "VAULT_LOGIN_ATTEMPTS": "2",
        "RATE_LIMIT_ENABLED": "false",
    }
    with ServiceProcess(env) as service:
        service.wait_live()
        deadline = time.monotonic() + 20
        while not any("login failed at startup" in line for line in service.log_lines()):
            assert time.monotonic() < deadline, service.log_lines()
            time.sleep(0.1)
        startup = httpx.get(service.url + "/health/startup")
        assert startup.status_code == 503
        assert startup.json() == {"status": "starting"}
        assert service.terminate() == 0
    lines = service.log_lines()
    failure = next(line for line in lines if "login failed at startup" in line)
    assert "vault rejected the service's credentials" in failure
    for line in lines:
        assert bad_secret_id not in line and role_id not in line


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


async def test_secret_id_rotation_is_picked_up_at_the_next_login(vault, tmp_path):
    """The operator issues a new secret-id, destroys the old one and replaces the file;
    the next login (here: forced by revoking the token) uses the new one."""
    vault.write_secret("rotation", {"v": 1})
    role = f"app-{uuid.uuid4().hex[:8]}"
    role_dir = vault.approle_dir(tmp_path / "approle", role, readable=["rotation"])
    async with running_app(**_fast(vault_addr=vault.url, vault_approle_dir=str(role_dir))) as (
        app,
        c,
    ):
        assert (await c.get("/examples/vault/secret/rotation")).status_code == 200
        first = _app_token(app)
        vault.destroy_secret_ids(role)
        (role_dir / "secret-id").write_text(vault.new_secret_id(role) + "\n")
        vault.revoke_tokens()
        vault.request_counts(reset=True)
        response = await c.get("/examples/vault/secret/rotation")
        assert response.status_code == 200
        assert _app_token(app) != first
        assert vault.request_counts().get("/v1/auth/approle/login") == 1


async def test_missing_approle_files_block_startup_with_a_clear_log(tmp_path, vault):
    with captured_json_logs() as logs:
        async with running_app(
            **_fast(vault_addr=vault.url, vault_approle_dir=str(tmp_path / "absent"))
        ) as (_, c):
            assert (await c.get("/health/startup")).status_code == 503
            response = await c.get("/examples/vault/secret/x")
            await assert_problem(response, 503, "backend-unavailable")
    assert "cannot read the AppRole files" in logs.getvalue()


# --- Vault down, sealed, slow ------------------------------------------------------------
async def test_vault_unreachable_service_starts_degraded_and_logs_in_later():
    vault = VaultTestServer(fault_proxy=False)  # its port is chosen, nothing listens yet
    try:
        async with running_app(
            **_fast(
                vault_addr=vault.url,
                vault_token=vault.root_token,
                required_backends=["vault"],
                circuit_recovery_seconds=1,
            )
        ) as (_, c):
            assert (await c.get("/health/startup")).status_code == 200
            ready = await c.get("/health/ready")
            assert ready.status_code == 503
            assert (await ready.get_json())["checks"]["vault"].startswith("unhealthy")
            response = await c.get("/examples/vault/secret/x")
            await assert_problem(response, 503, "backend-unavailable")
            assert int(response.headers["Retry-After"]) >= 1
            health = await c.get("/health/vault")
            assert health.status_code == 503
            assert (await health.get_json())["error"]

            vault.start()
            vault.write_secret("x", {"v": 1})
            deadline = time.monotonic() + 15
            while (await c.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, "the background login never succeeded"
                await asyncio.sleep(0.2)
            assert (await c.get("/examples/vault/secret/x")).status_code == 200
    finally:
        vault.stop()


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
                body = await assert_problem(response, 503, path="/examples/vault/secret/flaky")
                assert response.headers["Retry-After"]
                kinds.append(body["type"])
            assert kinds[:3] == ["/problems/backend-unavailable"] * 3
            assert kinds[3:] == ["/problems/circuit-open"] * 2
            assert metric_value("circuit_breaker_state", service="vault") == 2
            assert metric_value("circuit_breaker_opened_total", service="vault") == opened + 1
            proxy.set_mode("pass")
            half = metric_value("circuit_breaker_half_open_total", service="vault")
            closed = metric_value("circuit_breaker_closed_total", service="vault")

            async def recovered() -> bool:
                response = await c.get("/examples/vault/secret/flaky")
                if response.status_code == 200:
                    return True
                await assert_problem(response, 503, "circuit-open")  # fails fast until 1 s
                return False

            await wait_until(recovered, interval=0.1, what="the circuit's trial call")
            assert metric_value("circuit_breaker_half_open_total", service="vault") == half + 1
            assert metric_value("circuit_breaker_closed_total", service="vault") == closed + 1
            assert metric_value("circuit_breaker_state", service="vault") == 0


async def test_missing_secret_does_not_trip_the_circuit(vault):
    async with running_app(
        **_fast(vault_addr=vault.url, vault_token=vault.root_token, circuit_failure_threshold=2)
    ) as (_, c):
        for _ in range(4):
            assert (await c.get("/examples/vault/secret/nowhere")).status_code == 404
        assert metric_value("circuit_breaker_state", service="vault") == 0


async def test_vault_failing_with_500_is_503_problem(vault):
    vault.write_secret("broken", {"v": 1})
    async with running_app(**_fast(vault_addr=vault.url, vault_token=vault.root_token)) as (_, c):
        vault.set_failure(500)
        try:
            response = await c.get("/examples/vault/secret/broken")
            body = await assert_problem(response, 503, "backend-unavailable")
            assert "vault" in body["detail"]
            health = await c.get("/health/vault")
            assert health.status_code == 503
            assert (await health.get_json())["status"] == "unhealthy"
        finally:
            vault.set_failure(None)
        assert (await c.get("/examples/vault/secret/broken")).status_code == 200


async def test_sealed_vault_is_503_degrades_readiness_and_recovers_after_unseal(vault, approle):
    vault.write_secret("sealed", {"v": 1})
    settings = _fast(
        vault_addr=vault.url,
        vault_approle_dir=str(approle()),
        required_backends=["vault"],
        circuit_recovery_seconds=1,
        readiness_interval_seconds=0.2,  # readiness is the background monitor's last round
        readiness_failure_threshold=1,
    )

    async def ready_is(status: int) -> bool:
        return (await c.get("/health/ready")).status_code == status

    async with running_app(**settings) as (_, c):
        await wait_until(lambda: ready_is(200), what="readiness before sealing")
        vault.set_sealed(True)
        try:
            response = await c.get("/examples/vault/secret/sealed")
            await assert_problem(response, 503, "backend-unavailable")
            health = await c.get("/health/vault")
            assert health.status_code == 503
            body = await health.get_json()
            assert body["status"] == "unhealthy"
            assert "sealed" in body["error"]
            await wait_until(lambda: ready_is(503), what="readiness noticing the seal")
            ready = await c.get("/health/ready")
            assert (await ready.get_json())["checks"]["vault"].startswith("unhealthy")
            assert (await c.get("/health/live")).status_code == 200
        finally:
            vault.set_sealed(False)

        async def recovered() -> bool:
            return (await c.get("/examples/vault/secret/sealed")).status_code == 200

        await wait_until(recovered, interval=0.2, what="recovery after unseal")
        assert (await c.get("/health/vault")).status_code == 200
        await wait_until(lambda: ready_is(200), what="readiness after unseal")


async def test_standby_vault_is_healthy_with_standby_true():
    """A real standby: the second node of a two-node Raft cluster."""
    with VaultHAPair() as pair:
        async with running_app(
            **_fast(vault_addr=pair.standby_url, vault_token=pair.root_token)
        ) as (_, c):
            health = await c.get("/health/vault")
            assert health.status_code == 200
            body = await health.get_json()
            assert body["status"] == "healthy"
            assert body["details"]["standby"] is True


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
        body = await assert_problem(response, 504, "backend-timeout")
        assert "0.5" in body["detail"]


async def test_vault_not_configured_is_503_problem():
    async with running_app() as (_, c):
        response = await c.get("/examples/vault/secret/x")
        await assert_problem(response, 503, "backend-not-configured")


# --- cache -------------------------------------------------------------------------------
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


async def test_cache_expires_after_its_ttl(vault):
    vault.write_secret("ttl", {"v": 1})
    async with running_app(
        vault_addr=vault.url, vault_token=vault.root_token, vault_cache_ttl_seconds=1
    ) as (_, c):
        assert (await (await c.get("/examples/vault/secret/ttl/v")).get_json())["value"] == 1
        vault.write_secret("ttl", {"v": 2})
        assert (await (await c.get("/examples/vault/secret/ttl/v")).get_json())["value"] == 1

        async def fresh() -> bool:
            return (await (await c.get("/examples/vault/secret/ttl/v")).get_json())["value"] == 2

        await wait_until(fresh, what="the 1 s cache TTL expiring")


# --- credentials for the other backends ---------------------------------------------------
async def test_credentials_come_from_vault(vault):
    password = "pg-" + uuid.uuid4().hex
    vault.write_secret("postgres", {"user": "app", "password": password, "database": "db1"})
    vault.write_secret(
        "rabbitmq", {"user": "r", "password": "rp-" + uuid.uuid4().hex, "vhost": "/v"}
    )
    vault.write_secret("redis-1", {"password": 12345678})
    async with running_app(
        **_fast(
            vault_addr=vault.url,
            vault_token=vault.root_token,
            vault_cache_ttl_seconds=60,
            postgres_user="env-user",
            postgres_password="env-password",
            mysql_user="env-mysql",
            mysql_password="env-mysql-password",
        )
    ) as (app, _):
        provider = credential_provider(app)
        creds = await provider.get("postgres")
        assert (creds.user, creds.password, creds.database) == ("app", password, "db1")
        assert password not in repr(creds)
        assert (await provider.get("rabbitmq")).vhost == "/v"
        redis = await provider.get("redis")
        assert (redis.user, redis.password) == (None, "12345678")

        rotated = "new-" + password
        vault.write_secret("postgres", {"user": "app", "password": rotated})
        assert (await provider.get("postgres")).password == password  # cached
        assert (await provider.refresh("postgres")).password == rotated
        assert (await provider.get("postgres")).password == rotated  # the cache was refilled

        # no secret in Vault: no credentials (never the environment's)
        assert await provider.get("mysql") == Credentials()


async def test_credentials_fall_back_to_environment_only_without_vault():
    async with running_app(
        postgres_user="dev", postgres_password="dev-password", postgres_database="devdb"
    ) as (app, _):
        creds = await credential_provider(app).get("postgres")
        assert (creds.user, creds.password, creds.database) == ("dev", "dev-password", "devdb")
        assert (await credential_provider(app).get("mysql")).password is None


async def test_credentials_never_fall_back_when_vault_is_down():
    port = free_port()
    async with running_app(
        **_fast(
            vault_addr=f"http://127.0.0.1:{port}",
            vault_token="t-" + uuid.uuid4().hex,
            postgres_user="env-user",
            postgres_password="env-password",
        )
    ) as (app, _):
        with pytest.raises(BackendUnavailable):
            await credential_provider(app).get("postgres")


async def test_token_file_is_read_at_every_login(vault, tmp_path):
    """Vault Agent keeps a token in a file; the service re-reads it when it logs in."""
    vault.write_secret("agent", {"v": 1})
    token_file = tmp_path / "token"
    token_file.write_text(vault.create_token(ttl=3600) + "\n")
    async with running_app(
        vault_addr=vault.url, vault_token_file=str(token_file), vault_cache_ttl_seconds=0
    ) as (_, c):
        assert (await c.get("/examples/vault/secret/agent")).status_code == 200
        vault.revoke_tokens()  # the first token dies; the agent writes a new one
        token_file.write_text(vault.create_token(ttl=3600))
        response = await c.get("/examples/vault/secret/agent")
        assert response.status_code == 200
        assert (await response.get_json())["data"] == {"v": 1}
