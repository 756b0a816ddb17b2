"""BatchedScript against real Redis servers: batching, script reloading, per-call errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import redis as redis_sync
from quartstack.integrations.redis.batched_script import BatchedScript
from quartstack.integrations.redis.client import RedisClient
from quartstack.resilience import BackendError
from tests.support.app import running_app

INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _count_round_trips(redis: RedisClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations sent through the client, one per pipeline sent to Redis."""
    sent: list[str] = []
    run = redis.run

    async def counted(operation: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(operation)
        return await run(operation, *args, **kwargs)

    monkeypatch.setattr(redis, "run", counted)
    return sent


async def test_concurrent_runs_share_pipelines_and_get_their_own_replies(prefix, monkeypatch):
    async with running_app(redis_host="127.0.0.1", redis_port=6379) as (app, _):
        redis: RedisClient = app.extensions["redis"]
        round_trips = _count_round_trips(redis, monkeypatch)
        script = BatchedScript(redis, INCR_BY, operation="test")
        replies = await asyncio.gather(
            *(script.run([f"{prefix}:{i % 5}"], [i]) for i in range(100))
        )
        # every caller got the reply to its own run, in order per key
        totals: dict[int, int] = {}
        for i, reply in enumerate(replies):
            totals[i % 5] = totals.get(i % 5, 0) + i
            assert reply == totals[i % 5]
        assert round_trips == ["test"]  # all 100 were requested in one loop iteration

        assert await script.run([f"{prefix}:lone"], [7]) == 7  # a lone run is not held back
        assert round_trips == ["test", "test"]


async def test_script_missing_on_the_server_is_loaded_again(private_redis):
    async with running_app(redis_host="127.0.0.1", redis_port=private_redis) as (app, _):
        script = BatchedScript(app.extensions["redis"], INCR_BY, operation="test")
        assert await script.run(["k"], [1]) == 1
        redis_sync.Redis(port=private_redis).script_flush()  # as after a restart or failover
        assert await asyncio.gather(script.run(["k"], [1]), script.run(["k"], [2])) == [2, 4]


async def test_an_error_reaches_only_its_own_caller(private_redis):
    redis_sync.Redis(port=private_redis).set("not-a-number", "x")
    async with running_app(redis_host="127.0.0.1", redis_port=private_redis) as (app, _):
        script = BatchedScript(app.extensions["redis"], INCR_BY, operation="test")
        good, bad = await asyncio.gather(
            script.run(["n"], [1]), script.run(["not-a-number"], [1]), return_exceptions=True
        )
        assert good == 1
        assert isinstance(bad, redis_sync.ResponseError)


async def test_redis_down_fails_every_caller_of_the_batch(private_redis):
    async with running_app(redis_host="127.0.0.1", redis_port=private_redis) as (app, _):
        script = BatchedScript(app.extensions["redis"], INCR_BY, operation="test")
        assert await script.run(["k"], [1]) == 1
        redis_sync.Redis(port=private_redis).shutdown(nosave=True)
        results = await asyncio.gather(
            *(script.run(["k"], [1]) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(result, BackendError) for result in results), results


async def test_cancelled_caller_does_not_break_the_batch(prefix):
    async with running_app(redis_host="127.0.0.1", redis_port=6379) as (app, _):
        script = BatchedScript(app.extensions["redis"], INCR_BY, operation="test")
        first = asyncio.ensure_future(script.run([f"{prefix}:c"], [1]))
        second = asyncio.ensure_future(script.run([f"{prefix}:c"], [10]))
        await asyncio.sleep(0)  # both are queued
        first.cancel()
        assert await second == 11  # the batch ran; only the cancelled caller lost its reply
        with pytest.raises(asyncio.CancelledError):
            await first
