"""What the PostgreSQL, MySQL and MongoDB clients share: a lazily created pool that is
rebuilt once per credential rotation and retired gracefully.

The pool is created in the startup task with credentials from Vault; if the
database is down then, it is created on the first successful use instead (one
creation at a time, under a lock). When the server rejects the credentials (the
secret was rotated in Vault), the first request to notice fetches fresh ones with
``refresh()`` (past the Vault cache), builds a new pool and retries once; requests
that noticed at the same time reuse that new pool. The old pool is closed in the
background once the requests still using it have finished.

The rejection and its retry happen inside one guarded call, so a normal rotation
costs the circuit breaker nothing: only a call that still fails counts, once.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from quart import Quart

from quartstack.integrations.base import Backend
from quartstack.integrations.vault.credentials import Credentials, credential_provider
from quartstack.metrics import BACKEND_POOL_CONNECTIONS
from quartstack.resilience import BackendUnavailable

P = TypeVar("P")
C = TypeVar("C")
T = TypeVar("T")

logger = logging.getLogger("quartstack.pool")

#: How long a retired pool may wait for its borrowers before it is closed hard.
_RETIRE_TIMEOUT = 30.0


class PoolGeneration(Generic[P]):
    """One pool and how many calls are using it, so it can be closed once they finish."""

    def __init__(self, pool: P) -> None:
        self.pool = pool
        self.in_flight = 0
        self.drained = asyncio.Event()
        self.drained.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.drained.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.drained.set()


class PooledBackend(Backend, Generic[P, C], abc.ABC):
    """A database client owning one driver pool: lazy creation, rotation, metrics."""

    depends_on = ("vault",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._current: PoolGeneration[P] | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._stopped = False

    # --- what each database supplies ----------------------------------------------------
    @abc.abstractmethod
    async def _create(self, credentials: Credentials) -> P:
        """Build a pool and prove it works (raises the driver's error if not)."""

    @abc.abstractmethod
    def _connection(self, pool: P) -> AbstractAsyncContextManager[C]:
        """Lend one connection (or handle) from ``pool``."""

    @abc.abstractmethod
    async def _close(self, pool: P) -> None:
        """Close gracefully: borrowed connections finish first."""

    @abc.abstractmethod
    async def _terminate(self, pool: P) -> None:
        """Close at once, borrowed connections included."""

    @abc.abstractmethod
    def _is_auth_error(self, exc: BaseException) -> bool:
        """The server rejected the credentials."""

    def _is_lost_connection(self, exc: BaseException) -> bool:
        """A pooled connection died while idle; a fresh one may well succeed."""
        return False

    def is_transient(self, exc: Exception) -> bool:
        return super().is_transient(exc) or self._is_lost_connection(exc)

    @abc.abstractmethod
    def _pool_usage(self, pool: P) -> tuple[int, int]:
        """(in use, idle) connections of ``pool``."""

    @property
    @abc.abstractmethod
    def max_connections(self) -> int:
        """The configured pool maximum."""

    # --- lifecycle -------------------------------------------------------------------
    def init_app(self, app: Quart) -> None:
        super().init_app(app)
        # Read at scrape time, so /metrics is current even when no call ran lately.
        for index, state in enumerate(("in_use", "idle", "max")):
            BACKEND_POOL_CONNECTIONS.labels(self.name, state).set_function(
                functools.partial(self._pool_size, index)
            )

    async def start(self) -> None:
        await self.connect_or_degrade(
            self._ready, "database unavailable at startup; the pool is created on first use"
        )

    async def stop(self) -> None:
        self._stopped = True
        current, self._current = self._current, None
        if current is not None:
            await self._retire(current)
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await credential_provider(self.app).release(self.name)

    async def rotate_credentials(self) -> None:
        """Move to new credentials now (a dynamic lease nears its end): new requests
        go to a new pool, in-flight ones finish on the old one, which then closes."""
        current = self._current
        if current is None:
            return  # the pool is created with the new credentials at first use
        await self._rebuild(current, reason="credentials rotated")
        await asyncio.gather(*self._retiring, return_exceptions=True)

    # --- the pool --------------------------------------------------------------------
    async def _ready(self) -> PoolGeneration[P]:
        """The current pool; create it first if there is none (one creator at a time)."""
        current = self._current
        if current is not None:
            return current
        async with self._lock:
            if self._current is None:
                self._current = await self._open(fresh=False)
                logger.info("pool created", extra={"service": self.name})
            return self._current

    async def _open(self, *, fresh: bool) -> PoolGeneration[P]:
        provider = credential_provider(self.app)
        if fresh:
            pool = await self._create(await provider.refresh(self.name))
        else:
            try:
                pool = await self._create(await provider.get(self.name))
            except Exception as exc:
                if not self._is_auth_error(exc):
                    raise
                logger.warning(
                    "credentials rejected; fetching fresh ones",
                    extra={"service": self.name, "cause": type(exc).__name__},
                )
                pool = await self._create(await provider.refresh(self.name))
        if self._stopped:
            await self._terminate(pool)
            raise BackendUnavailable(self.name, f"{self.name} client is shutting down")
        return PoolGeneration(pool)

    async def _rebuild(
        self, stale: PoolGeneration[P], *, reason: str = "credentials rejected"
    ) -> PoolGeneration[P]:
        """Replace ``stale`` after its credentials were rejected: once, however many
        requests noticed; the stale pool drains and closes in the background."""
        async with self._lock:
            current = self._current
            if current is not None and current is not stale:
                return current
            if self._stopped:
                raise BackendUnavailable(self.name, f"{self.name} client is shutting down")
            logger.warning(
                f"{reason}; rebuilding the pool with fresh ones",
                extra={"service": self.name},
            )
            self._current = await self._open(fresh=True)
            logger.info("pool rebuilt with fresh credentials", extra={"service": self.name})
        if current is stale:
            task = asyncio.create_task(self._retire(stale), name=f"{self.name}-retire-pool")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return self._current

    async def _retire(self, generation: PoolGeneration[P]) -> None:
        """Wait for the calls still using ``generation``, then close it (hard if slow)."""
        try:
            async with asyncio.timeout(_RETIRE_TIMEOUT):
                await generation.drained.wait()
                await self._close(generation.pool)
        except Exception as exc:
            logger.warning(
                "pool did not close cleanly; terminating it",
                extra={"service": self.name, "cause": type(exc).__name__},
            )
            try:
                await self._terminate(generation.pool)
            except Exception as error:
                logger.warning(
                    "pool could not be terminated",
                    extra={"service": self.name, "cause": type(error).__name__},
                )

    # --- calls -----------------------------------------------------------------------
    async def run(
        self,
        operation: str,
        func: Callable[[C], Awaitable[T]],
        *,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``func(connection)`` under the breaker, the timeout and the metrics.

        Rejected credentials are retried once on a rebuilt pool (the server refused
        the login, so nothing ran). A connection that died while idle in the pool is
        retried once on a fresh one, but only when ``idempotent``; an idempotent call
        also retries connection errors with backoff (``RETRY_*``, in the guard).
        ``timeout`` replaces the backend timeout for work known to take longer
        (a migration, a relay batch that waits for the broker).
        """

        async def call() -> T:
            generation = await self._ready()
            rebuilt = reconnected = False
            while True:
                try:
                    return await self._use(generation, func)
                except Exception as exc:
                    if self._is_auth_error(exc) and not rebuilt:
                        generation, rebuilt = await self._rebuild(generation), True
                    elif idempotent and self._is_lost_connection(exc) and not reconnected:
                        reconnected = True
                    else:
                        raise

        return await self.guard.call(operation, call, idempotent=idempotent, timeout=timeout)

    async def _use(self, generation: PoolGeneration[P], func: Callable[[C], Awaitable[T]]) -> T:
        generation.enter()
        try:
            async with self._connection(generation.pool) as connection:
                return await func(connection)
        finally:
            generation.leave()

    def _pool_size(self, index: int) -> float:
        return float(self.pool_sizes()[index])

    def pool_sizes(self) -> tuple[int, int, int]:
        """(in use, idle, max) connections of the current pool (none before it exists)."""
        current = self._current
        in_use = idle = 0
        if current is not None:
            # A scrape must never fail because a pool is changing under it.
            with contextlib.suppress(Exception):
                in_use, idle = self._pool_usage(current.pool)
        return in_use, idle, self.max_connections
