"""The issuer's signing keys (JWKS), cached, refreshed when stale or on an unknown ``kid``.

An unknown ``kid`` is what a key rotation at the issuer looks like, so it triggers a
refetch; but anyone can send tokens with made-up ``kid`` values, so refetches are at
most one per ``AUTH_JWKS_MIN_REFRESH_SECONDS`` (concurrent misses share one fetch).
The fetch goes through a :class:`BackendGuard` ("jwks") with a timeout: an issuer
that is down opens its circuit, and the keys fetched before keep verifying tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWKSetError

from quartstack.resilience import BackendError, BackendGuard, BackendUnavailable
from quartstack.settings import Settings

logger = logging.getLogger("quartstack.auth")

#: A JWKS is a few kilobytes; a larger answer is not one.
MAX_JWKS_BYTES = 512 * 1024


@dataclass(frozen=True)
class SigningKey:
    """One key of the JWKS: ``alg`` is what the JWK declares (None if it declares none)."""

    key: Any
    key_type: str
    alg: str | None


def parse_jwks(document: dict[str, Any]) -> dict[str, SigningKey]:
    """kid → key, skipping keys this process cannot use (unknown type, no kid)."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise PyJWKSetError("the JWKS has no 'keys' list")
    keys: dict[str, SigningKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = PyJWK.from_dict(entry)
        except (PyJWKError, ValueError, TypeError):
            continue
        alg = entry.get("alg")
        keys[entry["kid"]] = SigningKey(
            jwk.key, str(entry.get("kty")), alg if isinstance(alg, str) else None
        )
    if not keys:
        raise PyJWKSetError("the JWKS has no usable signing key")
    return keys


class JwksCache:
    """kid → key of the issuer at ``AUTH_JWKS_URL`` (event loop only)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.auth_jwks_url is not None
        self.url = settings.auth_jwks_url
        self.min_refresh = settings.auth_jwks_min_refresh_seconds
        self.max_age = settings.auth_jwks_max_age_seconds
        self.guard = BackendGuard(
            "jwks",
            timeout=settings.auth_jwks_timeout_seconds,
            failure_threshold=settings.circuit_failure_threshold,
            recovery_timeout=settings.circuit_recovery_seconds,
        )
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> SigningKey | None:
        """The key with this id, refetching the JWKS if it is unknown (rate-limited) or
        the keys are older than ``AUTH_JWKS_MAX_AGE_SECONDS``."""
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        async with self._lock:  # concurrent misses wait for one fetch
            if (kid not in self._keys or self._stale()) and self._may_fetch():
                await self._refresh()
        if not self._keys:  # the issuer was never reached: an outage, not a bad token
            raise BackendUnavailable("jwks", "the token issuer's signing keys are unavailable")
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at >= self.max_age

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        since = time.monotonic() - self._attempted_at
        return since >= self.min_refresh or (self._stale() and since >= 1.0)

    async def _refresh(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            document = await self.guard.call("fetch", lambda: asyncio.to_thread(self._fetch))
            keys = parse_jwks(document)
        except (PyJWKSetError, BackendError) as exc:
            # Keep verifying with the keys we have, if any (key_for answers 503 if none).
            logger.warning("jwks fetch failed", extra={"reason": str(exc)})
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        logger.info("jwks fetched", extra={"kids": sorted(self._keys)})

    def _fetch(self) -> dict[str, Any]:
        """GET the JWKS (in a worker thread; the guard bounds the wait)."""
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310 - URL from settings
        with urllib.request.urlopen(request, timeout=self.guard.timeout) as answer:  # noqa: S310
            body = answer.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise PyJWKSetError("the JWKS answer is too large")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise PyJWKSetError("the JWKS answer is not a JSON object")
        return document
