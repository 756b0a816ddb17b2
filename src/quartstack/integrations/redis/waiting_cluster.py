"""A ``RedisCluster`` whose callers wait for a free connection, like the standalone pool.

redis-py's cluster client gives each node a pool that raises ``MaxConnectionsError``
the moment all its connections are busy, so a burst beyond ``REDIS_POOL_MAX`` turned
into errors (and, for the rate limiter, into checks that failed open). Here every
command and every pipeline holds one of ``max_connections`` permits while it runs.
A command uses one connection at a time and a pipeline at most one per node, so no
node's pool can be asked for more than it has. Waiting is bounded: a caller that
gets no permit in time is told the pool is full (``MaxConnectionsError``, neutral for
the circuit breaker), never that Redis failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import MaxConnectionsError

#: Set while a task holds a permit: what it runs inside (a pipeline retrying a redirected
#: command on the client) must not wait for a second one, or a full pool would deadlock.
_HOLDING: ContextVar[bool] = ContextVar("quartstack_redis_permit", default=False)


class WaitingRedisCluster(RedisCluster):
    """Commands and pipelines wait (up to ``wait_seconds``) for one of ``max_connections``
    permits."""

    def __init__(self, *args: Any, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(kwargs["max_connections"])
        self._wait_seconds = wait_seconds

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._permits.acquire()
        except TimeoutError:
            raise MaxConnectionsError("no cluster connection became free") from None
        token = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py raises for it
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingPipeline(ClusterPipeline):
    cluster_client: WaitingRedisCluster

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        async with self.cluster_client.permit():
            return await super().execute(raise_on_error, allow_redirections)
