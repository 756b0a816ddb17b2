"""API keys: ``qsk_<key id>_<secret>``, stored in Vault only as hashes.

The Vault KV v2 secret ``AUTH_API_KEYS_SECRET`` maps each key id to
``{"name": ..., "scopes": [...], "hash": ...}``. It is read through the Vault
client's KV cache (``VAULT_CACHE_TTL_SECONDS``), so a new or revoked key takes
effect within that TTL without a Vault call per request.

Why HMAC-SHA256 and not bcrypt/argon2: those are slow on purpose, to make guessing
a *low-entropy* password from a stolen hash expensive. Our secrets are 32 random
bytes (256 bits) made by the service: no guess list exists, so a fast hash is as
strong, and a slow one would cost ~100 ms of CPU per request, which any client could
turn into a denial of service by sending keys. The key id is the HMAC key, which
binds a hash to its entry (a hash copied onto another id does not verify).
Comparison is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from quartstack.auth.principal import Principal

PREFIX = "qsk_"
_KEY = re.compile(r"^qsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is shown once; ``entry`` is what Vault stores."""

    key_id: str
    key: str
    entry: dict[str, Any]


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def key_hash(key_id: str, secret: str) -> str:
    return hmac.new(key_id.encode(), secret.encode(), hashlib.sha256).hexdigest()


def new_key(name: str, scopes: Iterable[str]) -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 32 random bytes, 43 characters
    entry = {"name": name, "scopes": sorted(set(scopes)), "hash": key_hash(key_id, secret)}
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}", entry)


class InvalidApiKey(Exception):
    """The key is malformed, unknown or does not match; the message is a reason to
    log (it never contains the key)."""


def verify(credential: str, stored: dict[str, Any]) -> Principal:
    """The principal of ``credential`` given the stored entries (key id → entry)."""
    match = _KEY.fullmatch(credential)
    if match is None:
        raise InvalidApiKey("malformed api key")
    key_id, secret = match.groups()
    entry = stored.get(key_id)
    expected = entry.get("hash") if isinstance(entry, dict) else None
    if not isinstance(expected, str):
        # Still hash, so an unknown id takes as long as a wrong secret.
        hmac.compare_digest(key_hash(key_id, secret), "0" * 64)
        raise InvalidApiKey("unknown api key id")
    if not hmac.compare_digest(key_hash(key_id, secret), expected):
        raise InvalidApiKey("api key does not match")
    assert isinstance(entry, dict)
    scopes = entry.get("scopes", [])
    return Principal(
        id=f"key:{key_id}",
        kind="api_key",
        name=str(entry.get("name", "")),
        scopes=frozenset(str(s) for s in scopes) if isinstance(scopes, list) else frozenset(),
    )
