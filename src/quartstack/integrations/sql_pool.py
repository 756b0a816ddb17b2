"""What the PostgreSQL and MySQL pools share: lazy creation, credential rotation, metrics.

A pool is created in the startup task with credentials from Vault; if the
database is down then, it is created on the first successful use instead. When
the server rejects the credentials (they were rotated in Vault), the pool is
rebuilt once with fresh ones; the old pool closes in the background after the
requests still using it have finished.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from quartstack.integrations.base import Backend
from quartstack.integrations.vault.credentials import Credentials, credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS
from quartstack.resilience import BackendError

P = TypeVar("P")
C = TypeVar("C")
T = TypeVar("T")

logger = logging.getLogger("quartstack.sql")

_OLD_POOL_CLOSE_TIMEOUT = 30.0


class SqlPool(Backend, Generic[P, C], abc.ABC):
    """A database pool with lazy creation and one rebuild per credential rotation."""

    depends_on = ("vault",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool: P | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    # --- what each database supplies ----------------------------------------------------
    @abc.abstractmethod
    async def _create(self, credentials: Credentials) -> P: ...

    @abc.abstractmethod
    def _acquire(self, pool: P) -> Any:
        """An async context manager that lends one connection."""

    @abc.abstractmethod
    async def _close(self, pool: P) -> None:
        """Close gracefully: wait for borrowed connections to come back."""

    @abc.abstractmethod
    def _is_auth_error(self, exc: BaseException) -> bool: ...

    @abc.abstractmethod
    def _is_lost_connection(self, exc: BaseException) -> bool: ...

    @abc.abstractmethod
    def _pool_sizes(self, pool: P) -> tuple[int, int, int]:
        """(in use, idle, max) connections."""

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.guard.call("connect", self._ensure_pool)
        except BackendError as exc:
            logger.warning(
                "database unavailable at startup; the pool is created on first use",
                extra={"service": self.name, "reason": str(exc)},
            )

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(_OLD_POOL_CLOSE_TIMEOUT):
                    await self._close(pool)
            except TimeoutError:
                logger.warning("pool did not close in time", extra={"service": self.name})
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _ensure_pool(self) -> P:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                provider = credential_provider(self.app)
                try:
                    self._pool = await self._create(await provider.get(self.name))
                except Exception as exc:
                    if not self._is_auth_error(exc):
                        raise
                    logger.warning(
                        "credentials rejected; fetching fresh ones", extra={"service": self.name}
                    )
                    self._pool = await self._create(await provider.refresh(self.name))
                logger.info("pool created", extra={"service": self.name})
            return self._pool

    async def _rebuild(self, stale: P) -> P:
        """Replace ``stale`` after an authentication failure (once, however many
        requests noticed it); the stale pool drains in the background."""
        async with self._lock:
            if self._pool is not stale and self._pool is not None:
                return self._pool
            credentials = await credential_provider(self.app).refresh(self.name)
            self._pool = await self._create(credentials)
            logger.info("pool rebuilt with fresh credentials", extra={"service": self.name})
        task = asyncio.create_task(self._close_quietly(stale))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return self._pool

    async def _close_quietly(self, pool: P) -> None:
        try:
            async with asyncio.timeout(_OLD_POOL_CLOSE_TIMEOUT):
                await self._close(pool)
        except Exception:
            logger.warning("stale pool did not close cleanly", extra={"service": self.name})

    # --- calls -----------------------------------------------------------------------
    async def run(self, operation: str, func: Callable[[C], Awaitable[T]]) -> T:
        """Run ``func(connection)`` under the breaker and timeout.

        Only for idempotent reads: after a lost connection or rejected credentials
        the call is repeated once on a fresh connection.
        """

        async def call() -> T:
            pool = await self._ensure_pool()
            rebuilt = reconnected = False
            try:
                while True:
                    try:
                        return await self._once(pool, func)
                    except Exception as exc:
                        if self._is_auth_error(exc) and not rebuilt:
                            pool, rebuilt = await self._rebuild(pool), True
                        elif self._is_lost_connection(exc) and not reconnected:
                            reconnected = True
                        else:
                            raise
            finally:
                self.observe_pool()

        return await self.guard.call(operation, call)

    async def _once(self, pool: P, func: Callable[[C], Awaitable[T]]) -> T:
        async with self._acquire(pool) as connection:
            return await func(connection)

    def observe_pool(self) -> None:
        pool = self._pool
        if pool is None:
            return
        in_use, idle, maximum = self._pool_sizes(pool)
        BACKEND_POOL_CONNECTIONS.labels(self.name, "in_use").set(in_use)
        BACKEND_POOL_CONNECTIONS.labels(self.name, "idle").set(idle)
        BACKEND_POOL_CONNECTIONS.labels(self.name, "max").set(maximum)
