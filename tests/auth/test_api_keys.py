"""API keys end to end: made by ``quartstack auth create-key`` (a real process writing
to the test Vault), checked by the service through the Vault KV cache, revoked by
``quartstack auth revoke-key`` and refused once the cache TTL has passed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from quartstack.auth import api_keys
from quartstack.auth import cli as auth_cli
from quartstack.cli import _parser
from quartstack.settings import load_settings
from tests.support.app import captured_json_logs, running_app
from tests.support.leftovers import unique_name
from tests.support.polling import wait_until

READ_ROUTE = "/health/all"  # scope read; 200, or 503 if the Vault health check is slow


async def passes(client, headers: dict[str, str]) -> bool:
    """Authenticated and authorized (whatever the route then answers)."""
    return (await client.get(READ_ROUTE, headers=headers)).status_code not in (401, 403)


CACHE_TTL = 1.0


def quartstack_cli(vault_server, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "AUTH_"))}
    env |= {
        "VAULT_ADDR": vault_server.url,
        "VAULT_TOKEN": vault_server.root_token,
        "AUTH_API_KEYS_SECRET": secret,
    }
    return subprocess.run(
        [sys.executable, "-m", "quartstack", "auth", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_auth_command(vault_server, secret: str, *argv: str) -> int:
    """The command's own code in this process (a fresh interpreter costs seconds on a
    busy machine); one test below runs the real ``quartstack`` process."""
    settings = load_settings(
        vault_addr=vault_server.url,
        vault_token=vault_server.root_token,
        auth_api_keys_secret=secret,
    )
    return auth_cli.run_command(_parser().parse_args(["auth", *argv]), settings)


@pytest.fixture
def secret(vault_server):
    name = unique_name("-")
    yield name
    vault_server.delete_secret(name)


async def create_key(vault_server, secret: str, scopes: str, capsys) -> str:
    argv = ("create-key", "--name", "ci", "--scopes", scopes)
    assert await asyncio.to_thread(run_auth_command, vault_server, secret, *argv) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert api_keys.looks_like_api_key(key) and key not in err
    return key


async def test_keys_from_vault_then_revoked_after_the_cache_ttl(vault_server, secret, capsys):
    reader = await create_key(vault_server, secret, "read", capsys)
    writer = await create_key(vault_server, secret, "read,write", capsys)
    stored = vault_server.http.get(f"/v1/secret/data/{secret}").json()["data"]["data"]
    assert len(stored) == 2
    assert reader not in json.dumps(stored) and reader.split("_", 2)[2] not in json.dumps(stored)
    settings = {
        "auth_mode": "required",
        "auth_api_keys_secret": secret,
        "vault_addr": vault_server.url,
        "vault_token": vault_server.root_token,
        "vault_cache_ttl_seconds": CACHE_TTL,
    }
    async with running_app(**settings) as (_app, client):
        for headers in ({"X-API-Key": reader}, {"Authorization": f"Bearer {reader}"}):
            assert await passes(client, headers)
        # read-only key on a write route: 403; the read+write key passes auth (503: no Redis)
        write = await client.post("/examples/cache/k?value=v", headers={"X-API-Key": reader})
        assert write.status_code == 403
        write = await client.post("/examples/cache/k?value=v", headers={"X-API-Key": writer})
        assert write.status_code == 503
        key_id = reader.split("_")[1]
        wrong_secret = f"qsk_{key_id}_{'A' * 43}"
        unknown_id = f"qsk_{'0' * 16}_{reader.split('_', 2)[2]}"
        with captured_json_logs() as logs:
            for bad in (wrong_secret, unknown_id, "qsk_short", reader + "x"):
                response = await client.get(READ_ROUTE, headers={"X-API-Key": bad})
                assert response.status_code == 401, bad
                assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert reader.split("_", 2)[2] not in logs.getvalue()
        reasons = {json.loads(line).get("reason") for line in logs.getvalue().splitlines()}
        assert {"api key does not match", "unknown api key id", "malformed api key"} <= reasons

        revoke = ("revoke-key", "--id", key_id)
        assert await asyncio.to_thread(run_auth_command, vault_server, secret, *revoke) == 0
        revoked_at = time.monotonic()

        async def refused() -> bool:
            response = await client.get(READ_ROUTE, headers={"X-API-Key": reader})
            return response.status_code == 401

        await wait_until(refused, timeout=20, interval=0.1, what="the revoked key is refused")
        assert time.monotonic() - revoked_at < CACHE_TTL + 10  # the TTL, not the default 60 s
        # the other key is untouched
        assert await passes(client, {"X-API-Key": writer})


def _in_thread(*args: str) -> int:
    """``run_auth_command`` off the main thread: its ``asyncio.run`` ends by clearing the
    calling thread's event loop, which is the test session's loop on the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run_auth_command, *args).result()


def test_the_quartstack_command_makes_a_key_and_lists_it(vault_server, secret, capsys):
    done = quartstack_cli(vault_server, secret, "create-key", "--name", "ci", "--scopes", "admin")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert api_keys.looks_like_api_key(key) and key not in done.stderr
    assert _in_thread(vault_server, secret, "list-keys") == 0
    [entry] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["name"] == "ci" and entry["scopes"] == ["admin"] and "hash" not in entry
    bad = ("create-key", "--name", "x", "--scopes", "root")
    assert _in_thread(vault_server, secret, *bad) == 2
    assert _in_thread(vault_server, secret, "revoke-key", "--id", "0" * 16) == 1


def test_hashes_are_bound_to_their_key_id():
    key = api_keys.new_key("a", ["read"])
    other = api_keys.new_key("b", ["admin"])
    _, key_id, secret = key.key.split("_", 2)
    # b's hash copied under a's id does not accept b's secret under a's id
    stored = {key_id: {**other.entry}}
    with pytest.raises(api_keys.InvalidApiKey):
        api_keys.verify(f"qsk_{key_id}_{other.key.split('_', 2)[2]}", stored)
    principal = api_keys.verify(key.key, {key_id: key.entry})
    assert principal.id == f"key:{key_id}" and principal.scopes == {"read"}
    assert secret not in repr(principal)
