"""``VaultClient``: AppRole login, token renewal and cached KV v2 reads on hvac.

hvac is synchronous, so calls run on a small pool of threads (the event loop never
blocks) and health checks on a thread of their own, so a slow KV read holds up
neither other reads nor the health check. The threads share the process's one
``hvac.Client``: its requests session pools connections thread-safely, and a login
swaps the token in one assignment.
The token is renewed at about two thirds of its TTL and replaced by a fresh login
when it cannot be renewed or nears its max TTL; a 403 with an expired or revoked
token triggers one re-login and one retry, a 403 with a valid token (the policy
denies the path) is final.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from quartstack.integrations.base import Backend
from quartstack.integrations.vault.kv_cache import KvCache
from quartstack.masking import is_sensitive_field, url_passwords
from quartstack.metrics import VAULT_TOKEN_RENEWALS
from quartstack.redaction import register_secret, register_secrets
from quartstack.resilience import BackendError, BackendUnavailable, retry
from quartstack.settings import Settings

T = TypeVar("T")

logger = logging.getLogger("quartstack.vault")

#: After a renewal, a granted TTL below this share of the login TTL means the max TTL
#: is near (Vault caps renewals at it): log in again instead of renewing further.
_MAX_TTL_MARGIN = 0.5
_BACKGROUND_LOGIN_MAX_DELAY = 30.0
#: Vault answers that mean "your credentials are wrong", not "Vault is down".
_REJECTIONS = (
    hvac.exceptions.InvalidRequest,
    hvac.exceptions.Unauthorized,
    hvac.exceptions.Forbidden,
    hvac.exceptions.InvalidPath,
)
#: Redaction owner of the service's token: a new login's token replaces the old one.
_LOGIN_OWNER = "vault:token"
#: sys/health status codes of an unsealed, initialized node (active, standby, DR
#: secondary, performance standby).
_HEALTHY_CODES = (200, 429, 472, 473)
#: Threads for authenticated calls: independent reads run side by side; a burst beyond
#: this waits its turn (each call is still bounded by VAULT_TIMEOUT_SECONDS).
CALL_THREADS = 4


class SecretNotFound(Exception):
    """The KV secret (or one of its keys) does not exist: Vault answered, so not a failure."""

    def __init__(self, name: str, key: str | None = None) -> None:
        what = f"key {key!r} of secret {name!r}" if key else f"secret {name!r}"
        super().__init__(f"{what} does not exist")
        self.name = name
        self.key = key


class VaultAccessDenied(Exception):
    """Vault answered 403 while our token is valid: its policy denies this path. A
    deployment's choice, not an outage, and logging in again would not change it."""


class VaultLoginRejected(Exception):
    """Vault refused our credentials (wrong role-id/secret-id or token), or we have none."""


class VaultClient(Backend):
    """The process's one Vault client: owns the token, its renewal and the KV cache."""

    name = "vault"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.guard.timeout = settings.vault_timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="vault")
        # Health never queues behind calls: a probe must see Vault, not our backlog.
        self._health_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-health")
        self._client: hvac.Client | None = None
        self._login_lock = asyncio.Lock()
        self._generation = 0  # bumped at every successful login
        self._token_ttl = 0.0  # seconds granted at the last login or renewal; 0 = never expires
        self._login_ttl = 0.0
        self._renewable = False
        self._authenticated = False
        self._ever_authenticated = False
        self._login_rejected = False
        self._cache = KvCache(settings.vault_cache_ttl_seconds)
        self._inflight: dict[tuple[str, bool], asyncio.Task[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        # Vault answered: a missing path, a refused token or bad input is not an outage.
        return (*_REJECTIONS, VaultLoginRejected)

    def is_transient(self, exc: Exception) -> bool:
        return isinstance(exc, requests.exceptions.ConnectionError)

    @property
    def startup_blocked(self) -> bool:
        """Startup is not done while Vault rejects our credentials and no login ever
        succeeded: a misconfigured pod fails its startup probe instead of serving
        without secrets. An unreachable Vault does not block (the pod serves degraded)."""
        return self._login_rejected and not self._ever_authenticated

    @property
    def generation(self) -> int:
        """Bumped at every login: leases issued under an older token die with it."""
        return self._generation

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._client = hvac.Client(
            url=self.settings.vault_addr,
            timeout=self.settings.vault_timeout_seconds,
            verify=self.settings.vault_cacert or True,
        )
        try:
            await retry(
                self.login,
                attempts=self.settings.vault_login_attempts,
                base_delay=self.settings.retry_base_delay_seconds,
                max_delay=self.settings.retry_max_delay_seconds,
                retry_on=(BackendError, VaultLoginRejected),
            )
        except (BackendError, VaultLoginRejected) as exc:
            logger.error(
                "vault login failed at startup; serving degraded and retrying in background",
                extra={"reason": str(exc), "method": self._method},
            )
            self._spawn(self._login_until_success())
        self._spawn(self._renew_forever())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._revoke_own_token()
        executors = (self._executor, self._health_executor)
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
        client = self._client
        if client is not None:  # close the session once the calls still running are done
            threading.Thread(
                target=_close_after, args=(executors, client), name="vault-close", daemon=True
            ).start()

    async def _revoke_own_token(self) -> None:
        """Revoke the AppRole token on shutdown: a stopped replica's token should not
        stay valid for the rest of its TTL. A token that was given to us (VAULT_TOKEN,
        Vault Agent's token file) belongs to whoever issued it and is left alone."""
        if not (self.settings.vault_approle_dir and self._authenticated):
            return
        self._authenticated = False
        try:
            await self._guarded("revoke", _revoke_self)
        except Exception as exc:  # best effort: the token still expires with its TTL
            logger.warning("vault token not revoked", extra={"reason": type(exc).__name__})
        else:
            logger.info("vault token revoked")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- calls on the hvac threads ---------------------------------------------------
    async def _in_thread(
        self, func: Callable[[], T], executor: ThreadPoolExecutor | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor or self._executor, func)

    async def _guarded(
        self,
        operation: str,
        func: Callable[[hvac.Client], T],
        executor: ThreadPoolExecutor | None = None,
        idempotent: bool = False,
    ) -> T:
        client = self._require_client()
        return await self.guard.call(
            operation,
            lambda: self._in_thread(lambda: func(client), executor),
            idempotent=idempotent,
        )

    async def call(
        self, operation: str, func: Callable[[hvac.Client], T], *, idempotent: bool = False
    ) -> T:
        """Run an authenticated hvac call; on 403 log in again once and retry once.
        An ``idempotent`` call (a read) also retries connection errors (``RETRY_*``)."""
        if not self._authenticated:
            await self._login_for_call(self._generation)
        generation = self._generation
        try:
            return await self._guarded(operation, func, idempotent=idempotent)
        except hvac.exceptions.Forbidden:
            if await self._denied_by_policy(generation):
                raise VaultAccessDenied(f"vault policy denies the service {operation}") from None
            logger.warning("vault answered 403; logging in again", extra={"operation": operation})
        await self._login_for_call(generation)
        try:
            return await self._guarded(operation, func, idempotent=idempotent)
        except hvac.exceptions.Forbidden as exc:
            raise BackendUnavailable("vault", "vault denied access to the service") from exc

    async def _denied_by_policy(self, generation: int) -> bool:
        """After a 403 met with the token of ``generation``: is it the policy? Only if
        that token still works. Once another caller has logged in since (concurrent
        calls meeting one revoked token), the lookup would ask about the new token, not
        the one that was refused: the call is retried with the new one instead."""
        if self._generation != generation:
            return False
        valid = await self._token_is_valid()
        return valid and self._generation == generation

    async def _token_is_valid(self) -> bool:
        """After a 403: does our token still work (so the policy denies the path) or is
        it expired or revoked (so a login helps)? One cheap lookup-self tells."""
        try:
            await self._guarded("lookup", _lookup_self)
        except _REJECTIONS:
            return False
        return True

    async def _login_for_call(self, seen_generation: int) -> None:
        """Log in unless another caller already did since ``seen_generation``
        (many requests hitting one expired token make one login, not many)."""
        try:
            await self.login(unless_newer_than=seen_generation)
        except VaultLoginRejected as exc:
            raise BackendUnavailable("vault", "vault rejected the service's credentials") from exc

    def _require_client(self) -> hvac.Client:
        if self._client is None:
            raise BackendUnavailable("vault", "vault client is not started")
        return self._client

    # --- authentication ----------------------------------------------------------------
    async def login(self, *, unless_newer_than: int | None = None) -> None:
        """Log in with AppRole (files re-read every time) or adopt the configured token."""
        async with self._login_lock:
            if unless_newer_than is not None and self._generation > unless_newer_than:
                return
            if self.settings.vault_approle_dir:
                try:
                    role_id, secret_id = await self._in_thread(self._read_approle_files)
                except VaultLoginRejected:
                    self._reject()
                    raise
                login = functools.partial(_approle_login, role_id=role_id, secret_id=secret_id)
            elif self.settings.vault_token_file or self.settings.vault_token is not None:
                try:
                    token = await self._in_thread(self._read_token)
                except VaultLoginRejected:
                    self._reject()
                    raise
                register_secret(token, owner=_LOGIN_OWNER)
                login = functools.partial(_adopt_token, token=token)
            else:
                self._reject()
                raise VaultLoginRejected(
                    "none of VAULT_APPROLE_DIR, VAULT_TOKEN_FILE or VAULT_TOKEN is set"
                )
            try:
                ttl, renewable = await self._guarded("login", login)
            except _REJECTIONS as exc:
                self._reject()
                raise VaultLoginRejected(
                    "vault rejected the service's credentials (check role-id/secret-id or token)"
                ) from exc
            self._token_ttl = self._login_ttl = float(ttl)
            self._renewable = renewable
            self._authenticated = self._ever_authenticated = True
            self._login_rejected = False
            self._generation += 1
            logger.info(
                "vault login succeeded",
                extra={"ttl_s": ttl, "renewable": renewable, "method": self._method},
            )

    def _read_token(self) -> str:
        """The token: from VAULT_TOKEN_FILE (re-read at every login, so a token kept
        fresh by Vault Agent is picked up) or VAULT_TOKEN."""
        path = self.settings.vault_token_file
        if path:
            try:
                token = Path(path).read_text().strip()
            except OSError as exc:
                raise VaultLoginRejected(f"cannot read VAULT_TOKEN_FILE ({exc.strerror})") from None
            if token:
                return token
            raise VaultLoginRejected("VAULT_TOKEN_FILE is empty")
        assert self.settings.vault_token is not None
        return self.settings.vault_token.get_secret_value()

    def _reject(self) -> None:
        self._authenticated = False
        self._login_rejected = True

    @property
    def _method(self) -> str:
        return "approle" if self.settings.vault_approle_dir else "token"

    def _read_approle_files(self) -> tuple[str, str]:
        directory = Path(self.settings.vault_approle_dir or "")
        try:
            role_id = (directory / "role-id").read_text().strip()
            secret_id = (directory / "secret-id").read_text().strip()
        except OSError as exc:
            raise VaultLoginRejected(
                "cannot read the AppRole files role-id and secret-id in VAULT_APPROLE_DIR"
            ) from exc
        register_secret(role_id, owner="vault:role-id")
        register_secret(secret_id, owner="vault:secret-id")
        return role_id, secret_id

    async def _login_until_success(self) -> None:
        delay = 1.0
        while not self._authenticated:
            await asyncio.sleep(delay)
            try:
                await self.login()
            except (BackendError, VaultLoginRejected) as exc:
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
            except (BackendError, VaultLoginRejected) as exc:
                VAULT_TOKEN_RENEWALS.labels("failed").inc()
                logger.warning("vault token renewal failed", extra={"reason": str(exc)})
                self._token_ttl = max(1.0, self._token_ttl / 3)  # try again sooner
            except Exception:  # the loop must survive anything, or the token expires
                VAULT_TOKEN_RENEWALS.labels("failed").inc()
                logger.exception("vault token renewal failed unexpectedly")
                self._token_ttl = max(1.0, self._token_ttl / 3)

    async def _renew_or_relogin(self) -> None:
        near_max = self._token_ttl < self._login_ttl * _MAX_TTL_MARGIN
        if self._renewable and not near_max:
            try:
                auth = await self._guarded("renew", _renew_self)
            except _REJECTIONS:
                pass  # expired, revoked or not renewable after all: log in again below
            else:
                self._token_ttl = float(auth["lease_duration"])
                VAULT_TOKEN_RENEWALS.labels("renewed").inc()
                if self._token_ttl >= self._login_ttl * _MAX_TTL_MARGIN:
                    return
        await self.login()
        VAULT_TOKEN_RENEWALS.labels("relogin").inc()

    # --- KV v2 -----------------------------------------------------------------------
    async def read_secret(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The data of KV v2 secret ``name``: cached for ``VAULT_CACHE_TTL_SECONDS``,
        one Vault call per miss even when many requests miss together. ``fresh``
        skips the cache (and refills it) after a credential was rotated."""
        if not fresh:
            cached = self._cache.get(name)
            if cached is not None:
                return cached
        key = (name, fresh)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch_secret(name))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget_inflight, key))
        return await asyncio.shield(task)

    def _forget_inflight(self, key: tuple[str, bool], task: asyncio.Task[dict[str, Any]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _fetch_secret(self, name: str) -> dict[str, Any]:
        mount = self.settings.vault_mount
        try:
            response = await self.call(
                "kv_read",
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=name, mount_point=mount, raise_on_deleted_version=True
                ),
                idempotent=True,
            )
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(name) from None
        data: dict[str, Any] = response["data"]["data"]
        # The secret's owner is its name: a rotated password replaces the old one.
        register_secrets(f"vault:kv:{name}", sensitive_values(data))
        self._cache.put(name, data)
        return data

    async def health(self) -> dict[str, Any]:
        status, body = await self._guarded("health", _read_health, self._health_executor)
        details = {key: body.get(key) for key in ("initialized", "sealed", "standby")}
        if body.get("sealed"):
            raise BackendUnavailable("vault", "vault is sealed")
        if status not in _HEALTHY_CODES or not body.get("initialized"):
            raise BackendUnavailable("vault", f"vault health check answered {status}")
        if not self._authenticated:
            raise BackendUnavailable("vault", "vault login has not succeeded")
        # details.status repeats the top-level status: reference-contract clients read it
        return {"details": {**details, "status": "healthy"}, "version": body.get("version")}


def _approle_login(client: hvac.Client, *, role_id: str, secret_id: str) -> tuple[int, bool]:
    auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    register_secret(auth["client_token"], owner=_LOGIN_OWNER)
    return int(auth["lease_duration"]), bool(auth["renewable"])


def _adopt_token(client: hvac.Client, *, token: str) -> tuple[int, bool]:
    client.token = token
    data = client.auth.token.lookup_self()["data"]
    return int(data.get("ttl") or 0), bool(data.get("renewable"))


def _lookup_self(client: hvac.Client) -> None:
    client.auth.token.lookup_self()


def _revoke_self(client: hvac.Client) -> None:
    client.auth.token.revoke_self()


def _renew_self(client: hvac.Client) -> dict[str, Any]:
    auth: dict[str, Any] = client.auth.token.renew_self()["auth"]
    return auth


def _read_health(client: hvac.Client) -> tuple[int, dict[str, Any]]:
    """sys/health's status code and body; Vault answers 429 on a standby, 503 when
    sealed, 501 uninitialized, and hvac hands those back as a raw response."""
    response = client.sys.read_health_status(method="GET")
    if isinstance(response, requests.Response):
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body if isinstance(body, dict) else {}
    result: dict[str, Any] = response
    return 200, result


def _close_after(executors: tuple[ThreadPoolExecutor, ...], client: hvac.Client) -> None:
    for executor in executors:
        executor.shutdown(wait=True)
    client.adapter.close()


def sensitive_values(data: Any, sensitive: bool = False) -> list[str]:
    """The values of sensitive fields (any depth, and everything nested under them),
    to scrub from logs; numbers count too, as their text.

    Only sensitive fields: registering user names or database names such as
    ``postgres`` would scrub those words from every log line.
    """
    if isinstance(data, dict):
        return [
            value
            for key, item in data.items()
            for value in sensitive_values(item, sensitive or is_sensitive_field(str(key)))
        ]
    if isinstance(data, list):
        return [value for item in data for value in sensitive_values(item, sensitive)]
    if data is None or isinstance(data, bool):
        return []
    values = [str(data)] if sensitive else []
    if isinstance(data, str):
        values.extend(url_passwords(data))  # a DSN, whatever its field is called
    return values
