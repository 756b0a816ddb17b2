"""Credentials for every backend, from Vault KV v2 (or the environment without Vault).

Backends ask the :class:`CredentialProvider` for their credentials when they
build a pool, and call :meth:`CredentialProvider.refresh` once after the server
rejects them (the secret was rotated in Vault).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quart import Quart, current_app

from quartstack.integrations.vault.client import SecretNotFound, VaultClient
from quartstack.redaction import register_secret
from quartstack.resilience import BackendUnavailable
from quartstack.settings import Settings

CREDENTIALS_KEY = "quartstack.credentials"

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
    """Hands out backend credentials: Vault when configured, else the environment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Quart | None = None

    async def get(self, service: str) -> Credentials:
        """Current credentials for ``service`` (``postgres``, ``mysql``, ``mongodb``,
        ``rabbitmq``, ``redis``). Raises BackendUnavailable if Vault cannot be read."""
        return await self._read(service, fresh=False)

    async def refresh(self, service: str) -> Credentials:
        """Fresh credentials, bypassing any cache: call after an authentication failure."""
        return await self._read(service, fresh=True)

    async def _read(self, service: str, *, fresh: bool) -> Credentials:
        vault = self._vault()
        if vault is None:
            return self._from_environment(service)
        try:
            data = await vault.read_secret(SECRET_NAMES[service], fresh=fresh)
        except SecretNotFound as exc:
            raise BackendUnavailable(service, f"no credentials for {service} in Vault") from exc
        password = data.get("password")
        return Credentials(
            user=_text(data.get("user")),
            password=None if password is None else str(password),
            database=_text(data.get("database")),
            vhost=_text(data.get("vhost")),
        )

    def _vault(self) -> VaultClient | None:
        if self.app is None or self.settings.vault_addr is None:
            return None
        vault = self.app.extensions.get("vault")
        return vault if isinstance(vault, VaultClient) else None

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
