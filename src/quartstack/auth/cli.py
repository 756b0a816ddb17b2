"""``quartstack auth create-key|revoke-key|list-keys``: API keys for the local dev stack.

The key is printed once and never stored: Vault keeps its HMAC (see
:mod:`quartstack.auth.api_keys`) under ``AUTH_API_KEYS_SECRET``. Writes use KV v2
check-and-set, so two operators adding keys at once do not lose one. The Vault
token (``VAULT_TOKEN``) needs write access to that secret; the service's own policy
only needs read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import hvac.exceptions
from quart import Quart

from quartstack import NAME
from quartstack.auth.api_keys import new_key
from quartstack.auth.scopes import CREDENTIAL_SCOPES
from quartstack.integrations.base import REGISTRY_KEY, BackendRegistry, registry
from quartstack.integrations.vault.client import VaultClient
from quartstack.resilience import BackendError
from quartstack.settings import Settings

COMMANDS = frozenset({"auth"})
_CAS_ATTEMPTS = 5


def add_commands(commands: Any) -> None:
    auth = commands.add_parser("auth", help="manage API keys (hashes in Vault KV)")
    actions = auth.add_subparsers(dest="auth_action", required=True)
    create = actions.add_parser("create-key", help="make an API key; prints it once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument(
        "--scopes", default="read", help="comma-separated: read, write, admin (default read)"
    )
    revoke = actions.add_parser("revoke-key", help="delete a key by its id")
    revoke.add_argument("--id", required=True, dest="key_id")
    actions.add_parser("list-keys", help="print id, name and scopes of every key")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    secret = settings.auth_api_keys_secret
    if secret is None:  # the settings check that VAULT_ADDR is set along with it
        print("quartstack: AUTH_API_KEYS_SECRET is not set", file=sys.stderr)
        return 2
    try:
        if args.auth_action == "create-key":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            unknown = sorted(set(scopes) - set(CREDENTIAL_SCOPES))
            if unknown or not scopes:
                print(
                    f"quartstack: scopes must be among {', '.join(CREDENTIAL_SCOPES)}",
                    file=sys.stderr,
                )
                return 2
            key = new_key(args.name, scopes)
            asyncio.run(update_keys(settings, lambda keys: {**keys, key.key_id: key.entry}))
            print(f"key id {key.key_id}, scopes {','.join(key.entry['scopes'])}", file=sys.stderr)
            print("the key (shown once, store it now):", file=sys.stderr)
            print(key.key)
            return 0
        if args.auth_action == "revoke-key":
            found: list[bool] = []

            def without(keys: dict[str, Any]) -> dict[str, Any]:
                found.append(args.key_id in keys)
                return {k: v for k, v in keys.items() if k != args.key_id}

            asyncio.run(update_keys(settings, without))
            if not found[-1]:
                print(f"quartstack: no key with id {args.key_id}", file=sys.stderr)
                return 1
            return 0
        for key_id, entry in asyncio.run(update_keys(settings, None)).items():
            print(
                json.dumps({"id": key_id, "name": entry.get("name"), "scopes": entry.get("scopes")})
            )
        return 0
    except (BackendError, hvac.exceptions.VaultError) as exc:
        print(f"quartstack: vault: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


@asynccontextmanager
async def vault_client(settings: Settings) -> AsyncIterator[VaultClient]:
    app = Quart(NAME)
    app.extensions[REGISTRY_KEY] = BackendRegistry([])
    vault = VaultClient(settings)
    vault.init_app(app)
    await registry(app).start_all()
    try:
        yield vault
    finally:
        await registry(app).stop_all()


async def update_keys(
    settings: Settings, change: Callable[[dict[str, Any]], dict[str, Any]] | None
) -> dict[str, Any]:
    """Read the key entries and, if ``change`` is given, write ``change(entries)`` with
    check-and-set (retried when another writer came first); returns what was read."""
    assert settings.auth_api_keys_secret is not None
    path, mount = settings.auth_api_keys_secret, settings.vault_mount
    async with vault_client(settings) as vault:
        for _ in range(_CAS_ATTEMPTS):
            try:
                answer = await vault.call(
                    "kv_read",
                    lambda c: c.secrets.kv.v2.read_secret_version(
                        path=path, mount_point=mount, raise_on_deleted_version=False
                    ),
                )
                keys: dict[str, Any] = answer["data"]["data"] or {}
                version: int = answer["data"]["metadata"]["version"]
            except hvac.exceptions.InvalidPath:
                keys, version = {}, 0
            if change is None:
                return keys
            updated = change(keys)

            def write(
                client: hvac.Client, data: dict[str, Any] = updated, cas: int = version
            ) -> Any:
                return client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=data, cas=cas, mount_point=mount
                )

            try:
                await vault.call("kv_write", write)
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                continue  # someone else wrote in between: read again
            return keys
    raise BackendError("vault", "the API keys secret kept changing; try again")
