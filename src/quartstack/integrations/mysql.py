"""``MySQLPool``: an aiomysql pool behind the ``mysql`` circuit breaker."""

from __future__ import annotations

from typing import Any

import aiomysql
import pymysql

from quartstack.integrations.sql_pool import SqlPool
from quartstack.integrations.vault.credentials import Credentials

_ACCESS_DENIED = 1045
_LOST_CONNECTION = {2006, 2013}  # server has gone away; lost connection during query


def _mysql_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


class MySQLPool(SqlPool[aiomysql.Pool, aiomysql.Connection]):
    name = "mysql"

    async def _create(self, credentials: Credentials) -> aiomysql.Pool:
        settings = self.settings
        pool: aiomysql.Pool = await aiomysql.create_pool(
            host=settings.mysql_host,
            port=settings.mysql_port,
            user=credentials.user or "",
            password=credentials.password or "",
            db=credentials.database or settings.mysql_database,
            minsize=min(settings.mysql_pool_min, settings.mysql_pool_max),
            maxsize=settings.mysql_pool_max,
            pool_recycle=settings.mysql_pool_recycle_seconds,
            connect_timeout=settings.backend_timeout_seconds,
            autocommit=True,
        )
        return pool

    def _acquire(self, pool: aiomysql.Pool) -> Any:
        return pool.acquire()

    async def _close(self, pool: aiomysql.Pool) -> None:
        pool.close()  # refuses new acquisitions; borrowed connections finish first
        await pool.wait_closed()

    def _is_auth_error(self, exc: BaseException) -> bool:
        return _mysql_code(exc) == _ACCESS_DENIED

    def _is_lost_connection(self, exc: BaseException) -> bool:
        return _mysql_code(exc) in _LOST_CONNECTION

    def _pool_sizes(self, pool: aiomysql.Pool) -> tuple[int, int, int]:
        return pool.size - pool.freesize, pool.freesize, pool.maxsize

    async def scalar(self, operation: str, query: str) -> Any:
        async def fetch(connection: aiomysql.Connection) -> Any:
            async with connection.cursor() as cursor:
                await cursor.execute(query)
                row = await cursor.fetchone()
            return row[0] if row else None

        return await self.run(operation, fetch)

    async def health(self) -> dict[str, Any]:
        return {"version": str(await self.scalar("health", "SELECT VERSION()"))}
