"""``VaultClient``: AppRole login, token renewal and cached KV v2 reads on hvac.

hvac is synchronous, so every call runs on one dedicated thread: the event loop
never blocks and calls are serialized on the single ``hvac.Client``. The token is
renewed at about two thirds of its TTL, replaced by a fresh login when it cannot
be renewed, and a 403 on any call triggers one re-login and one retry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from quartstack.integrations.base import Backend
from quartstack.metrics import VAULT_TOKEN_RENEWALS
from quartstack.redaction import is_sensitive_field, register_secret
from quartstack.resilience import BackendUnavailable, retry
from quartstack.settings import Settings

T = TypeVar("T")

logger = logging.getLogger("quartstack.vault")

#: Re-login instead of renewing when less than this share of the login TTL is left
#: after a renewal: the token is close to its max TTL.
_MAX_TTL_MARGIN = 0.5
_BACKGROUND_LOGIN_MAX_DELAY = 30.0


class SecretNotFound(Exception):
    """The KV secret (or one of its keys) does not exist: Vault answered, so not a failure."""

    def __init__(self, name: str, key: str | None = None) -> None:
        what = f"key {key!r} of secret {name!r}" if key else f"secret {name!r}"
        super().__init__(f"{what} does not exist")
        self.name = name
        self.key = key


class VaultLoginRejected(Exception):
    """Vault refused our credentials (wrong role-id/secret-id or token)."""


class VaultClient(Backend):
    """The process's one Vault client: owns the token, its renewal and the KV cache."""

    name = "vault"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.guard.timeout = settings.vault_timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault")
        self._client: hvac.Client | None = None
        self._login_lock = asyncio.Lock()
        self._token_ttl = 0.0  # seconds granted at the last login or renewal; 0 = never expires
        self._login_ttl = 0.0
        self._renewable = False
        self._authenticated = False
        self._login_rejected = False
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        # Vault answered: a missing path, a refused token or bad login input is not an outage.
        return (
            hvac.exceptions.InvalidPath,
            hvac.exceptions.Forbidden,
            hvac.exceptions.InvalidRequest,
            VaultLoginRejected,
        )

    @property
    def startup_blocked(self) -> bool:
        """Startup is not done while Vault rejects our credentials: a misconfigured
        pod should fail its startup probe rather than serve without secrets."""
        return self._login_rejected and not self._authenticated

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._client = hvac.Client(
            url=self.settings.vault_addr, timeout=self.settings.vault_timeout_seconds
        )
        try:
            await retry(
                self.login,
                attempts=self.settings.vault_login_attempts,
                base_delay=self.settings.retry_base_delay_seconds,
                max_delay=self.settings.retry_max_delay_seconds,
                retry_on=(BackendUnavailable, VaultLoginRejected),
            )
        except (BackendUnavailable, VaultLoginRejected) as exc:
            logger.error(
                "vault login failed at startup; serving degraded and retrying in background",
                extra={"reason": str(exc)},
            )
            self._spawn(self._login_until_success())
        self._spawn(self._renew_forever())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- calls on the hvac thread ----------------------------------------------------
    async def _in_thread(self, func: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, func)

    async def _guarded(self, operation: str, func: Callable[[hvac.Client], T]) -> T:
        client = self._require_client()
        return await self.guard.call(operation, lambda: self._in_thread(lambda: func(client)))

    async def call(self, operation: str, func: Callable[[hvac.Client], T]) -> T:
        """Run an authenticated hvac call; on 403 log in again once and retry once."""
        if not self._authenticated:
            await self._login_for_call()
        try:
            return await self._guarded(operation, func)
        except hvac.exceptions.Forbidden:
            logger.warning("vault answered 403; logging in again", extra={"operation": operation})
        await self._login_for_call()
        try:
            return await self._guarded(operation, func)
        except hvac.exceptions.Forbidden as exc:
            raise BackendUnavailable("vault", "vault denied access to the service") from exc

    async def _login_for_call(self) -> None:
        try:
            await self.login()
        except VaultLoginRejected as exc:
            raise BackendUnavailable("vault", "vault rejected the service's credentials") from exc

    def _require_client(self) -> hvac.Client:
        if self._client is None:
            raise BackendUnavailable("vault", "vault client is not started")
        return self._client

    # --- authentication ----------------------------------------------------------------
    async def login(self) -> None:
        """Log in with AppRole (files re-read every time) or adopt the configured token."""
        async with self._login_lock:
            try:
                ttl, renewable = await self._guarded("login", self._login_sync)
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
                self._login_rejected = True
                raise VaultLoginRejected(
                    "vault rejected the service's credentials (check role-id/secret-id or token)"
                ) from exc
            self._token_ttl = self._login_ttl = float(ttl)
            self._renewable = renewable
            self._authenticated = True
            self._login_rejected = False
            logger.info(
                "vault login succeeded",
                extra={"ttl_s": ttl, "renewable": renewable, "method": self._method},
            )

    @property
    def _method(self) -> str:
        return "approle" if self.settings.vault_approle_dir else "token"

    def _login_sync(self, client: hvac.Client) -> tuple[int, bool]:
        approle_dir = self.settings.vault_approle_dir
        if approle_dir:
            directory = Path(approle_dir)
            role_id = (directory / "role-id").read_text().strip()
            secret_id = (directory / "secret-id").read_text().strip()
            register_secret(role_id)
            register_secret(secret_id)
            auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
            register_secret(auth["client_token"])
            return int(auth["lease_duration"]), bool(auth["renewable"])
        if self.settings.vault_token is None:
            raise VaultLoginRejected("neither VAULT_APPROLE_DIR nor VAULT_TOKEN is set")
        token = self.settings.vault_token.get_secret_value()
        register_secret(token)
        client.token = token
        data = client.auth.token.lookup_self()["data"]
        return int(data.get("ttl") or 0), bool(data.get("renewable"))

    async def _login_until_success(self) -> None:
        delay = 1.0
        while not self._authenticated:
            await asyncio.sleep(delay)
            try:
                await self.login()
            except (BackendUnavailable, VaultLoginRejected) as exc:
                VAULT_TOKEN_RENEWALS.labels("failed").inc()
                logger.warning("vault login retry failed", extra={"reason": str(exc)})
                delay = min(_BACKGROUND_LOGIN_MAX_DELAY, delay * 2)

    async def _renew_forever(self) -> None:
        """Keep the token valid: renew at ~2/3 of its TTL, or log in again."""
        while True:
            if not self._authenticated or self._token_ttl <= 0:
                await asyncio.sleep(1.0)  # not logged in yet, or a token that never expires
                continue
            await asyncio.sleep(max(0.2, self._token_ttl * 2 / 3))
            try:
                await self._renew_or_relogin()
            except (BackendUnavailable, VaultLoginRejected) as exc:
                VAULT_TOKEN_RENEWALS.labels("failed").inc()
                logger.warning("vault token renewal failed", extra={"reason": str(exc)})
                self._token_ttl = max(1.0, self._token_ttl / 3)  # try again sooner

    async def _renew_or_relogin(self) -> None:
        near_max = self._token_ttl < self._login_ttl * _MAX_TTL_MARGIN
        if self._renewable and not near_max:
            try:
                auth = await self._guarded("renew", lambda c: c.auth.token.renew_self()["auth"])
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                pass  # expired or not renewable after all: log in again below
            else:
                self._token_ttl = float(auth["lease_duration"])
                VAULT_TOKEN_RENEWALS.labels("renewed").inc()
                if self._token_ttl >= self._login_ttl * _MAX_TTL_MARGIN:
                    return
        await self.login()
        VAULT_TOKEN_RENEWALS.labels("relogin").inc()

    # --- KV v2 -----------------------------------------------------------------------
    async def read_secret(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The data of KV v2 secret ``name``: cached briefly, one Vault call per miss
        even when many requests miss together."""
        if not fresh:
            cached = self._cache.get(name)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._fetch_secret(name))
            self._inflight[name] = task
            task.add_done_callback(functools.partial(self._forget_inflight, name))
        return await asyncio.shield(task)

    def _forget_inflight(self, name: str, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]

    async def _fetch_secret(self, name: str) -> dict[str, Any]:
        mount = self.settings.vault_mount
        try:
            response = await self.call(
                "kv_read",
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=name, mount_point=mount, raise_on_deleted_version=True
                ),
            )
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(name) from None
        data: dict[str, Any] = response["data"]["data"]
        _register_values(data)
        ttl = self.settings.vault_cache_ttl_seconds
        if ttl > 0:
            self._cache[name] = (time.monotonic() + ttl, data)
        return data

    async def health(self) -> dict[str, Any]:
        status = await self._guarded("health", _read_health)
        details = {key: status.get(key) for key in ("initialized", "sealed", "standby")}
        if status.get("sealed") or not status.get("initialized"):
            raise BackendUnavailable("vault", "vault is sealed or not initialized")
        if not self._authenticated:
            raise BackendUnavailable("vault", "vault login has not succeeded yet")
        return {"details": details, "version": status.get("version")}


def _read_health(client: hvac.Client) -> dict[str, Any]:
    # Vault answers sys/health with 503 when sealed and 429 on a standby; read the body anyway.
    response = client.sys.read_health_status(method="GET")
    if isinstance(response, requests.Response):
        body: dict[str, Any] = response.json()
        return body
    result: dict[str, Any] = response
    return result


def _register_values(data: Any, sensitive: bool = False) -> None:
    """Register the values of sensitive fields (and everything nested under them)."""
    if isinstance(data, dict):
        for key, value in data.items():
            _register_values(value, sensitive or is_sensitive_field(str(key)))
    elif isinstance(data, list):
        for value in data:
            _register_values(value, sensitive)
    elif sensitive and isinstance(data, str):
        register_secret(data)
