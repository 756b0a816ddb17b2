"""A Lua script that many concurrent callers run as one pipeline per loop iteration.

The rate limiter runs its script on every request. Sent one by one, each run pays
redis-py's whole per-command path (pool checkout, health check, its own socket
read and task wake-up), which measured several times the cost of the same
command inside a pipeline. Here the runs requested during one event-loop
iteration are queued and sent together: under load one round trip serves many
requests, and a lone request still goes out on the next iteration, so nothing
waits for a batch to fill. redis-py has no auto-pipelining of its own.

A batch is one call through the Redis client's circuit breaker and timeout: if
it fails, every caller in it gets the error (the limiter then fails open), and
the breaker counts one failure per batch. The limiter gives a batch its own short
timeout (``RATE_LIMIT_TIMEOUT_SECONDS``): a silent Redis then costs the requests of a
batch that long, not ``BACKEND_TIMEOUT_SECONDS``. On a Redis Cluster the batch is one
pipeline per master (redis-py splits it by slot): a burst takes one connection per
node instead of one per request, so it cannot exhaust the pool and fail open.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from quartstack.integrations.redis.client import NOT_SERVING, RedisClient

Call = tuple[Sequence[str], Sequence[int | str], asyncio.Future[Any]]


class BatchedScript:
    """Run ``script`` with ``run(keys, args)``; concurrent runs share pipelines."""

    def __init__(
        self,
        redis: RedisClient,
        script: str,
        *,
        operation: str,
        max_batch: int = 256,
        timeout: float | None = None,
    ) -> None:
        self.redis = redis
        self.timeout = timeout  # of each batch; None: BACKEND_TIMEOUT_SECONDS
        self.script = script
        self.sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        self.operation = operation
        self.max_batch = max_batch
        self._pending: list[Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """The script's reply for these keys and arguments (raises what Redis raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            # An empty context: the batch serves many requests, so it must not log
            # under the request id of whichever request happened to come first.
            loop.call_soon(self._flush, context=contextvars.Context())
        self._pending.append((keys, args, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_batch):
            task = asyncio.create_task(self._send(pending[start : start + self.max_batch]))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self.redis.run(
                self.operation, lambda c: self._pipeline(c, batch), timeout=self.timeout
            )
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller was cancelled (client gone)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, client: Any, batch: list[Call]) -> list[Any]:
        replies = await self._run_pipelined(client, batch)
        for reply in replies:
            if isinstance(reply, NOT_SERVING):
                raise reply  # Redis cannot serve now: a failure of the whole batch
        return replies

    async def _run_pipelined(self, client: Any, batch: list[Call]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args, _ in batch:
            # execute_command, not evalsha(): redis-py blocks the evalsha() method of
            # cluster pipelines, but routes the command by its keys like any other.
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        # A restarted or newly promoted node has no scripts: EVAL loads it there.
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            pipe = client.pipeline(transaction=False)
            for i in missing:
                keys, args, _ = batch[i]
                pipe.execute_command("EVAL", self.script, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies
