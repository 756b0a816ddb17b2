"""The Vault-API test server speaks Vault's HTTP API: envelopes, status codes, token rules.

These run hvac (the client the service uses) and plain HTTP against the stand-in,
so a drift from Vault's API shows here before it confuses a service test.
"""

from __future__ import annotations

import time
import uuid

import httpx
import hvac
import hvac.exceptions
import pytest

from tests.support.vault import VaultTestServer


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_session_server_health_and_kv_v2_envelope(vault_server: VaultTestServer) -> None:
    health = httpx.get(f"{vault_server.url}/v1/sys/health")
    assert health.status_code == 200
    body = health.json()
    assert (body["initialized"], body["sealed"], body["standby"]) == (True, False, False)
    assert body["version"]

    name = _name("smoke")
    vault_server.write_secret(name, {"user": "u", "password": "p", "port": 5432, "on": True})
    vault_server.write_secret(name, {"user": "u2"})
    client = hvac.Client(url=vault_server.url, token=vault_server.root_token)
    latest = client.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"user": "u2"}
    assert latest["data"]["metadata"]["version"] == 2
    first = client.secrets.kv.v2.read_secret_version(
        path=name, version=1, raise_on_deleted_version=True
    )
    assert first["data"]["data"] == {"user": "u", "password": "p", "port": 5432, "on": True}

    vault_server.delete_secret(name)
    missing = httpx.get(
        f"{vault_server.url}/v1/secret/data/{name}",
        headers={"X-Vault-Token": vault_server.root_token},
    )
    assert missing.status_code == 404
    assert missing.json() == {"errors": []}
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)


@pytest.mark.parametrize("token", [None, "hvs.wrong", "expired"])
def test_missing_wrong_or_expired_token_is_403(vault: VaultTestServer, token: str | None) -> None:
    vault.write_secret("guarded", {"v": 1})
    if token == "expired":
        token = vault.create_token(ttl=60)
        vault.expire_tokens()
    headers = {} if token is None else {"X-Vault-Token": token}
    response = httpx.get(f"{vault.url}/v1/secret/data/guarded", headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": ["permission denied"]}


def test_approle_login_envelope_and_wrong_secret_id(vault_server: VaultTestServer) -> None:
    role = _name("smoke-role")
    role_id, secret_id = vault_server.create_approle(role, token_ttl=30, token_max_ttl=90)
    client = hvac.Client(url=vault_server.url)
    auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["client_token"].startswith("hvs.")
    assert auth["lease_duration"] == 30
    assert auth["renewable"] is True
    assert "default" in auth["policies"]
    assert auth["metadata"] == {"role_name": role}
    me = client.auth.token.lookup_self()["data"]
    assert me["ttl"] in (29, 30) and me["renewable"] is True

    response = httpx.post(
        f"{vault_server.url}/v1/auth/approle/login",
        json={"role_id": role_id, "secret_id": "wrong-" + secret_id},
    )
    assert response.status_code == 400
    assert response.json() == {"errors": ["invalid role or secret ID"]}
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=vault_server.url).auth.approle.login(role_id=role_id, secret_id="nope")


def test_renew_self_extends_ttl_capped_at_max(vault_server: VaultTestServer) -> None:
    role_id, secret_id = vault_server.create_approle(_name("renew"), token_ttl=3, token_max_ttl=5)
    client = hvac.Client(url=vault_server.url)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    time.sleep(1.1)
    renewed = client.auth.token.renew_self()
    assert renewed["auth"]["lease_duration"] == 3
    time.sleep(1.1)
    capped = client.auth.token.renew_self(increment=60)
    assert capped["auth"]["lease_duration"] < 60
    assert capped["auth"]["lease_duration"] <= 3
    assert "capped" in capped["warnings"][0]


def test_batch_token_is_not_renewable(vault_server: VaultTestServer) -> None:
    role_id, secret_id = vault_server.create_approle(_name("batch"), renewable=False)
    client = hvac.Client(url=vault_server.url)
    auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["renewable"] is False and auth["client_token"].startswith("hvb.")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.auth.token.renew_self()


def test_token_num_uses_is_enforced(vault_server: VaultTestServer) -> None:
    token = vault_server.create_token(ttl=60, num_uses=2)
    client = hvac.Client(url=vault_server.url, token=token)
    client.auth.token.lookup_self()
    client.auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()


def test_admin_endpoints_need_the_root_token(vault_server: VaultTestServer) -> None:
    token = vault_server.create_token(ttl=60)
    response = httpx.post(
        f"{vault_server.url}/v1/auth/approle/role/{_name('x')}",
        headers={"X-Vault-Token": token},
        json={"token_ttl": 5},
    )
    assert response.status_code == 403
    assert response.json() == {"errors": ["permission denied"]}


def test_seal_standby_latency_and_failure_switches(vault: VaultTestServer) -> None:
    vault.write_secret("s", {"v": 1})
    kv = f"{vault.url}/v1/secret/data/s"
    headers = {"X-Vault-Token": vault.root_token}

    vault.set_sealed(True)
    health = httpx.get(f"{vault.url}/v1/sys/health")
    assert health.status_code == 503 and health.json()["sealed"] is True
    sealed = httpx.get(kv, headers=headers)
    assert sealed.status_code == 503
    assert sealed.json() == {"errors": ["Vault is sealed"]}
    with pytest.raises(hvac.exceptions.VaultDown):
        hvac.Client(url=vault.url, token=vault.root_token).secrets.kv.v2.read_secret_version(
            path="s", raise_on_deleted_version=True
        )
    vault.set_sealed(False)
    assert httpx.get(kv, headers=headers).status_code == 200

    vault.set_standby(True)
    assert httpx.get(f"{vault.url}/v1/sys/health").status_code == 429
    assert httpx.get(f"{vault.url}/v1/sys/health?standbyok=true").status_code == 200
    vault.set_standby(False)

    vault.set_failure(500)
    failed = httpx.get(kv, headers=headers)
    assert failed.status_code == 500 and failed.json()["errors"]
    vault.set_failure(None)

    vault.set_latency(0.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(kv, headers=headers, timeout=0.2)
    vault.set_latency(0)
    vault.request_counts(reset=True)
    assert httpx.get(kv, headers=headers).status_code == 200
    assert vault.request_counts() == {"/v1/secret/data/s": 1}


def test_other_kv_v2_mount(vault: VaultTestServer) -> None:
    vault.enable_kv_v2("team")
    vault.write_secret("app", {"user": "t"}, mount="team")
    client = hvac.Client(url=vault.url, token=vault.root_token)
    data = client.secrets.kv.v2.read_secret_version(
        path="app", mount_point="team", raise_on_deleted_version=True
    )
    assert data["data"]["data"] == {"user": "t"}
