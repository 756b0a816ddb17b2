"""``MySQLPool``: an aiomysql pool (MySQL or MariaDB) behind the ``mysql`` circuit breaker.

The server closes a connection that stayed idle longer than its ``wait_timeout``
(8 h by default); a pool handing out such a connection would fail the request.
aiomysql replaces pooled connections idle for longer than ``pool_recycle``, so
``MYSQL_POOL_RECYCLE_SECONDS`` must stay below the server's ``wait_timeout``; the
pool checks that when it is created and warns if not.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiomysql
import pymysql

from quartstack.integrations.pooled import PooledBackend
from quartstack.integrations.vault.credentials import Credentials

SERVICE = "mysql"

logger = logging.getLogger("quartstack.mysql")

_ACCESS_DENIED = 1045
_LOST_CONNECTION = {2006, 2013}  # server has gone away; lost connection during query
_CANT_CONNECT = 2003


def _mysql_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


class MySQLPool(PooledBackend[aiomysql.Pool, aiomysql.Connection]):
    """The app's MySQL: queries over the pool, and health (server version)."""

    name = SERVICE

    @property
    def max_connections(self) -> int:
        return self.settings.mysql_pool_max

    async def _create(self, credentials: Credentials) -> aiomysql.Pool:
        settings = self.settings
        pool = aiomysql.Pool(
            minsize=min(settings.mysql_pool_min, settings.mysql_pool_max),
            maxsize=settings.mysql_pool_max,
            echo=False,
            pool_recycle=settings.mysql_pool_recycle_seconds,
            loop=asyncio.get_running_loop(),
            host=settings.mysql_host,
            port=settings.mysql_port,
            user=credentials.user or "",
            password=credentials.password or "",
            db=credentials.database or settings.mysql_database,
            connect_timeout=settings.backend_timeout_seconds,
            charset="utf8mb4",
            autocommit=True,
        )
        try:
            # The first acquire opens the minimum connections and proves the credentials.
            async with pool.acquire() as connection, connection.cursor() as cursor:
                await cursor.execute("SELECT @@session.wait_timeout")
                row = await cursor.fetchone()
        except BaseException:
            pool.terminate()
            await pool.wait_closed()
            raise
        self._check_recycle(int(row[0]) if row else None)
        return pool

    def _check_recycle(self, wait_timeout: int | None) -> None:
        recycle = self.settings.mysql_pool_recycle_seconds
        if wait_timeout is not None and recycle >= wait_timeout:
            logger.warning(
                "MYSQL_POOL_RECYCLE_SECONDS is not below the server's wait_timeout; "
                "idle pooled connections may be closed by the server before they are recycled",
                extra={"pool_recycle_s": recycle, "wait_timeout_s": wait_timeout},
            )

    def _connection(self, pool: aiomysql.Pool) -> AbstractAsyncContextManager[aiomysql.Connection]:
        acquire: AbstractAsyncContextManager[aiomysql.Connection] = pool.acquire()
        return acquire

    async def _close(self, pool: aiomysql.Pool) -> None:
        pool.close()  # refuses new acquisitions; borrowed connections finish first
        await pool.wait_closed()

    async def _terminate(self, pool: aiomysql.Pool) -> None:
        pool.terminate()
        await pool.wait_closed()

    def _is_auth_error(self, exc: BaseException) -> bool:
        return _mysql_code(exc) == _ACCESS_DENIED

    def _is_lost_connection(self, exc: BaseException) -> bool:
        return _mysql_code(exc) in _LOST_CONNECTION

    def is_transient(self, exc: Exception) -> bool:
        return super().is_transient(exc) or _mysql_code(exc) == _CANT_CONNECT

    def _pool_usage(self, pool: aiomysql.Pool) -> tuple[int, int]:
        return pool.size - pool.freesize, pool.freesize

    async def scalar(self, operation: str, query: str) -> Any:
        """The first column of the first row of a read-only ``query``."""

        async def fetch(connection: aiomysql.Connection) -> Any:
            async with connection.cursor() as cursor:
                await cursor.execute(query)
                row = await cursor.fetchone()
            return row[0] if row else None

        return await self.run(operation, fetch, idempotent=True)

    async def health(self) -> dict[str, Any]:
        return {"version": str(await self.scalar("health", "SELECT VERSION()"))}
