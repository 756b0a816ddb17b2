"""Secret masking in success bodies, against a real OpenBao and real Redis."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import redis as redis_sync
from tests.support.app import running_app
from tests.support.vault import VaultTestServer


def _pw(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


SENSITIVE = {
    "dsn": "host=db user=app password=" + _pw("dsn"),
    "url": "https://hooks.example/" + _pw("url"),
    "db_pass": _pw("pass"),
    "pwd": _pw("pwd"),
    "credential": _pw("cred"),
    "credentials": {"user": "app", "value": _pw("creds")},
    "private_key": "-----BEGIN PRIVATE KEY-----" + _pw("pk"),
    "mongo_uri": "mongodb://" + _pw("uri") + "@mongo",
    "databaseUri": _pw("camel"),
}
URL_PASSWORD = _pw("urlpw")
PLAIN = {
    "host": "db.local",
    "security": "strict",  # contains "uri" but is not a URI field
    "primary": f"postgresql://app:{URL_PASSWORD}@db.local:5432/app?sslmode=require",
    "replicas": [f"postgresql://ro:{URL_PASSWORD}@r1/app", "postgresql://r2/app"],
    "hint": "the pwd field is " + SENSITIVE["pwd"],  # a known secret under an ordinary name
}
MASKED_PLAIN = {
    "host": "db.local",
    "security": "strict",
    "primary": "postgresql://app:***@db.local:5432/app?sslmode=require",
    "replicas": ["postgresql://ro:***@r1/app", "postgresql://r2/app"],
    "hint": "the pwd field is ***",
}


@pytest.fixture(scope="module")
def vault_with_secret():
    name = f"masking-{uuid.uuid4().hex[:8]}"
    with VaultTestServer() as vault:
        vault.write_secret(name, {**SENSITIVE, **PLAIN})
        yield vault, name


def _settings(vault: VaultTestServer, **more: Any) -> dict[str, Any]:
    return dict(
        vault_addr=vault.url, vault_token=vault.root_token, vault_cache_ttl_seconds=0, **more
    )


async def test_sensitive_names_and_url_passwords_are_masked(vault_with_secret):
    vault, name = vault_with_secret
    async with running_app(**_settings(vault)) as (_, c):
        response = await c.get(f"/examples/vault/secret/{name}")
        assert response.status_code == 200
        body = await response.get_json()
        assert body["data"] == {**{key: "***" for key in SENSITIVE}, **MASKED_PLAIN}
        text = (await response.get_data()).decode()
        for secret in (*map(str, SENSITIVE.values()), URL_PASSWORD):
            assert secret not in text
        for key in SENSITIVE:
            one = await (await c.get(f"/examples/vault/secret/{name}/{key}")).get_json()
            assert one["value"] == "***", key
        for key, expected in MASKED_PLAIN.items():
            one = await (await c.get(f"/examples/vault/secret/{name}/{key}")).get_json()
            assert one["value"] == expected, key


async def test_a_known_secret_value_is_scrubbed_from_any_success_body(vault_with_secret):
    vault, name = vault_with_secret
    key = f"quartstack-test:masking:{uuid.uuid4().hex}"
    direct = redis_sync.Redis(port=6379)
    try:
        async with running_app(**_settings(vault, redis_host="127.0.0.1")) as (_, c):
            assert (await c.get(f"/examples/vault/secret/{name}")).status_code == 200
            for secret in (SENSITIVE["pwd"], URL_PASSWORD):  # learned from Vault by now
                direct.set(key, f"stored: {secret}")
                read = await c.get(f"/examples/cache/{key}")
                assert read.status_code == 200
                assert (await read.get_json())["value"] == "stored: ***"
                assert secret not in (await read.get_data()).decode()
            ordinary = f"ordinary-{uuid.uuid4().hex}"
            direct.set(key, ordinary)
            assert (await (await c.get(f"/examples/cache/{key}")).get_json())["value"] == ordinary
    finally:
        direct.delete(key)
        direct.close()
