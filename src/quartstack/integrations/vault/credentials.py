"""Credentials for every backend, from Vault KV v2, Vault dynamic secrets (leases),
or the environment without Vault.

Backends ask the :class:`CredentialProvider` for their credentials when they
build a pool, and call :meth:`CredentialProvider.refresh` once after the server
rejects them (the secret was rotated in Vault, or the lease ended). A backend with
``<NAME>_CREDENTIALS=dynamic`` gets a lease kept by a
:class:`~quartstack.integrations.vault.leases.LeaseKeeper`, and calls
:meth:`CredentialProvider.release` when it stops.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from quart import Quart, current_app

from quartstack.integrations.vault.client import SecretNotFound, VaultAccessDenied, VaultClient
from quartstack.integrations.vault.leases import LeaseKeeper
from quartstack.redaction import register_secret
from quartstack.resilience import BackendUnavailable
from quartstack.settings import Settings

CREDENTIALS_KEY = "quartstack.credentials"

logger = logging.getLogger("quartstack.credentials")

#: Backends that can take dynamic credentials (``<NAME>_CREDENTIALS=dynamic``).
DYNAMIC_SERVICES = ("postgres", "mysql", "rabbitmq")

#: Vault secret name per backend; the env fallback uses the backend's settings prefix.
SECRET_NAMES = {
    "postgres": "postgres",
    "mysql": "mysql",
    "mongodb": "mongodb",
    "rabbitmq": "rabbitmq",
    "redis": "redis-1",
}


@dataclass(frozen=True)
class Credentials:
    """What a backend needs to authenticate; the password never shows in a repr."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    vhost: str | None = None


class CredentialProvider:
    """Hands out backend credentials: Vault when ``VAULT_ADDR`` is set, else the
    environment (local development only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Quart | None = None
        self._keepers: dict[str, LeaseKeeper] = {}

    async def get(self, service: str) -> Credentials:
        """Current credentials for ``service`` (``postgres``, ``mysql``, ``mongodb``,
        ``rabbitmq``, ``redis``). Raises BackendUnavailable if Vault cannot be read;
        a missing secret means "no credentials"."""
        return await self._read(service, fresh=False)

    async def refresh(self, service: str) -> Credentials:
        """Fresh credentials, bypassing any cache: call after an authentication failure."""
        return await self._read(service, fresh=True)

    async def _read(self, service: str, *, fresh: bool) -> Credentials:
        if service not in SECRET_NAMES:
            raise ValueError(f"no credentials are defined for {service!r}")
        if self.settings.vault_addr is None:
            return self._from_environment(service)
        vault = self._vault()
        if self.is_dynamic(service):
            lease = await self._keeper(service, vault).get(fresh=fresh)
            vhost = self.settings.rabbitmq_vhost if service == "rabbitmq" else None
            return Credentials(user=lease.user, password=lease.password, vhost=vhost)
        try:
            data = await vault.read_secret(SECRET_NAMES[service], fresh=fresh)
        except SecretNotFound:
            # Optional auth (a Redis without a password): the backend connects without
            # credentials and its server says clearly if it needs them.
            logger.warning(
                "no vault secret for this backend; connecting without credentials",
                extra={"service": service, "vault_path": SECRET_NAMES[service]},
            )
            return Credentials()
        except VaultAccessDenied:
            raise BackendUnavailable(
                "vault", f"the vault policy does not let the service read its {service} secret"
            ) from None
        password = _text(data.get("password"))
        register_secret(password)  # a numeric password is registered as text too
        return Credentials(
            user=_text(data.get("user")),
            password=password,
            database=_text(data.get("database")),
            vhost=_text(data.get("vhost")),
        )

    def is_dynamic(self, service: str) -> bool:
        return (
            service in DYNAMIC_SERVICES
            and getattr(self.settings, f"{service}_credentials", "kv") == "dynamic"
        )

    def _keeper(self, service: str, vault: VaultClient) -> LeaseKeeper:
        keeper = self._keepers.get(service)
        if keeper is None:
            role = getattr(self.settings, f"{service}_vault_role")
            mount = (
                self.settings.vault_rabbitmq_mount
                if service == "rabbitmq"
                else self.settings.vault_database_mount
            )
            path = f"{mount}/creds/{role}"
            keeper = LeaseKeeper(service, vault, path, self._rotation(service))
            self._keepers[service] = keeper
        return keeper

    def _rotation(self, service: str) -> Callable[[], Awaitable[None]]:
        """How the keeper asks ``service``'s backend to rebuild its pool."""

        async def rotate() -> None:
            backend = self.app.extensions.get(service) if self.app is not None else None
            rebuild = getattr(backend, "rotate_credentials", None)
            if rebuild is not None:
                await rebuild()

        return rotate

    async def release(self, service: str) -> None:
        """Revoke ``service``'s lease (on shutdown, after its pool closed)."""
        keeper = self._keepers.pop(service, None)
        if keeper is not None:
            await keeper.release()

    def _vault(self) -> VaultClient:
        """The app's Vault client; with Vault configured there is no silent fallback."""
        vault = self.app.extensions.get("vault") if self.app is not None else None
        if not isinstance(vault, VaultClient):
            raise BackendUnavailable("vault", "the vault client is not initialized")
        return vault

    def _from_environment(self, service: str) -> Credentials:
        """Local development only: ``<NAME>_USER``, ``<NAME>_PASSWORD``, ``<NAME>_DATABASE``."""
        prefix = service.replace("-", "_")
        values = self.settings.model_dump()
        password = values.get(f"{prefix}_password")
        secret = password.get_secret_value() if password is not None else None
        register_secret(secret)
        return Credentials(
            user=values.get(f"{prefix}_user"),
            password=secret,
            database=values.get(f"{prefix}_database"),
            vhost=values.get(f"{prefix}_vhost"),
        )

    def init_app(self, app: Quart) -> None:
        self.app = app
        app.extensions[CREDENTIALS_KEY] = self


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def credential_provider(app: Quart | None = None) -> CredentialProvider:
    target = app if app is not None else current_app
    provider: CredentialProvider = target.extensions[CREDENTIALS_KEY]
    return provider
