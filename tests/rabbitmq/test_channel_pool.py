"""ChannelPool.drained: a credential rotation waits for every publish that chose the
old pool, from the moment it chose it (no broker needed: the pool's own bookkeeping)."""

from __future__ import annotations

import asyncio
import time

from quartstack.integrations.rabbitmq.channel_pool import ChannelPool


class _Channel:
    is_closed = False

    async def close(self) -> None:
        self.is_closed = True


async def _open() -> _Channel:
    return _Channel()


def _pool() -> ChannelPool:
    return ChannelPool(_open, 2, "rabbitmq-pool-test")  # type: ignore[arg-type]


async def test_an_idle_pool_is_drained_at_once():
    began = time.monotonic()
    await _pool().drained(5)
    assert time.monotonic() - began < 1


async def test_a_publish_that_chose_the_pool_holds_the_rotation_until_it_is_done():
    """The race CI once saw: a publish chose the pool, then awaited its queue declaration
    before acquiring a channel; the rotation must not see the pool as drained then."""
    pool = _pool()
    with pool.held():  # chosen, nothing acquired yet
        waiting = asyncio.create_task(pool.drained(5))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()
        async with pool.acquire():
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiting.done()
    began = time.monotonic()
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - began < 1  # woken by the last publish, not by polling or timeout


async def test_drained_gives_up_after_its_timeout():
    pool = _pool()
    with pool.held():
        began = time.monotonic()
        await pool.drained(0.1)
        assert 0.09 <= time.monotonic() - began < 2
