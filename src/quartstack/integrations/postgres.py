"""``PostgresPool``: an asyncpg pool behind the ``postgres`` circuit breaker.

The pool keeps ``POSTGRES_POOL_MIN``..``POSTGRES_POOL_MAX`` connections. Besides
the guard's timeout, every statement has asyncpg's ``command_timeout`` (the
backend timeout), so a query abandoned by its caller is also cancelled on the
server rather than left running. ``POSTGRES_STATEMENT_CACHE_SIZE`` is
asyncpg's per-connection prepared-statement cache: keep the default against
PostgreSQL itself, set ``0`` behind PgBouncer in transaction or statement pooling
mode (prepared statements do not survive a server-connection switch there).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from quartstack.integrations.pooled import PooledBackend
from quartstack.integrations.vault.credentials import Credentials

SERVICE = "postgres"

_AUTH_ERRORS = (
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
)
#: The server answered and refused the data (a unique or check violation): the
#: request's problem, not the database's health. They reach the caller unchanged.
_ANSWERED = (asyncpg.exceptions.IntegrityConstraintViolationError,)
_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    # asyncpg's pool can trip over its own holder state while a dead connection is
    # being replaced under concurrent acquires; a fresh acquire succeeds.
    asyncpg.exceptions.InternalClientError,
    ConnectionResetError,
)


async def _rollback_only(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (``RESET ALL``, ``UNLISTEN *``,
    ``CLOSE ALL``, advisory unlock), which costs one more round trip per request.

    asyncpg still rolls back an open transaction on release, as SQLAlchemy's pools
    do. Code that changes session state (``SET``, ``LISTEN``, advisory locks) must
    undo it before giving the connection back.
    """


class PostgresPool(PooledBackend[asyncpg.Pool, asyncpg.Connection]):
    """The app's PostgreSQL: queries over the pool, and health (server version)."""

    name = SERVICE

    @property
    def max_connections(self) -> int:
        return self.settings.postgres_pool_max

    def ignored_exceptions(self) -> tuple[type[BaseException], ...]:
        return _ANSWERED

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
            reset=_rollback_only,
        )
        return pool

    def _connection(self, pool: asyncpg.Pool) -> AbstractAsyncContextManager[asyncpg.Connection]:
        acquire: AbstractAsyncContextManager[asyncpg.Connection] = pool.acquire()
        return acquire

    async def _close(self, pool: asyncpg.Pool) -> None:
        await pool.close()  # waits for borrowed connections to be released

    async def _terminate(self, pool: asyncpg.Pool) -> None:
        pool.terminate()

    def _is_auth_error(self, exc: BaseException) -> bool:
        return isinstance(exc, _AUTH_ERRORS)

    def _is_lost_connection(self, exc: BaseException) -> bool:
        return isinstance(exc, _LOST)

    def _pool_usage(self, pool: asyncpg.Pool) -> tuple[int, int]:
        size, idle = pool.get_size(), pool.get_idle_size()
        return size - idle, idle

    async def scalar(self, operation: str, query: str) -> Any:
        """The first column of the first row of a read-only ``query``."""
        return await self.run(
            operation, lambda connection: connection.fetchval(query), idempotent=True
        )

    @contextlib.asynccontextmanager
    async def listen(
        self, channel: str, on_notify: Callable[[], None]
    ) -> AsyncIterator[asyncpg.Connection]:
        """Hold one pooled connection ``LISTEN``ing on ``channel`` for the block;
        ``on_notify()`` runs on every notification. The connection counts against
        the pool while held; ``UNLISTEN`` runs before it goes back (the pool's reset
        does not undo session state)."""
        generation = await self.guard.call("listen", self._ready)
        generation.enter()

        def callback(*_args: object) -> None:
            on_notify()

        try:
            async with self._connection(generation.pool) as connection:
                await self.guard.call("listen", lambda: connection.add_listener(channel, callback))
                try:
                    yield connection
                finally:
                    if not connection.is_closed():
                        with contextlib.suppress(Exception):
                            await connection.remove_listener(channel, callback)
        finally:
            generation.leave()

    async def health(self) -> dict[str, Any]:
        version = await self.scalar("health", "SELECT version()")
        return {"version": str(version)}
