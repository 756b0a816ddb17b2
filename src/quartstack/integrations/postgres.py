"""``PostgresPool``: an asyncpg pool behind the ``postgres`` circuit breaker."""

from __future__ import annotations

from typing import Any

import asyncpg

from quartstack.integrations.sql_pool import SqlPool
from quartstack.integrations.vault.credentials import Credentials

_AUTH_ERRORS = (
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
)
_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    # asyncpg's pool can trip over its own holder state while a dead connection is
    # being replaced under concurrent acquires; a fresh acquire succeeds.
    asyncpg.exceptions.InternalClientError,
    ConnectionResetError,
)


class PostgresPool(SqlPool[asyncpg.Pool, asyncpg.Connection]):
    name = "postgres"

    async def _create(self, credentials: Credentials) -> asyncpg.Pool:
        settings = self.settings
        pool: asyncpg.Pool = await asyncpg.create_pool(
            host=settings.postgres_host,
            port=settings.postgres_port,
            user=credentials.user,
            password=credentials.password,
            database=credentials.database or settings.postgres_database,
            min_size=min(settings.postgres_pool_min, settings.postgres_pool_max),
            max_size=settings.postgres_pool_max,
            command_timeout=settings.backend_timeout_seconds,
            timeout=settings.backend_timeout_seconds,
            statement_cache_size=settings.postgres_statement_cache_size,
            server_settings={"application_name": "quartstack"},
        )
        return pool

    def _acquire(self, pool: asyncpg.Pool) -> Any:
        return pool.acquire()

    async def _close(self, pool: asyncpg.Pool) -> None:
        await pool.close()

    def _is_auth_error(self, exc: BaseException) -> bool:
        return isinstance(exc, _AUTH_ERRORS)

    def _is_lost_connection(self, exc: BaseException) -> bool:
        return isinstance(exc, _LOST)

    def _pool_sizes(self, pool: asyncpg.Pool) -> tuple[int, int, int]:
        size, idle = pool.get_size(), pool.get_idle_size()
        return size - idle, idle, pool.get_max_size()

    async def health(self) -> dict[str, Any]:
        version = await self.run("health", lambda c: c.fetchval("SHOW server_version"))
        return {"version": str(version)}
