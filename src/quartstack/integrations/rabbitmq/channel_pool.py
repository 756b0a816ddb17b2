"""A bounded pool of AMQP channels, each lent to one caller at a time.

A channel that may be in an unknown state (closed by the broker, its connection
lost, or its user interrupted mid-publish) is closed and replaced rather than
returned: a half-written publish or a channel-level error must not leak into the
next request. After a connection loss every pooled channel is closed, so they are
simply dropped on their next checkout and new ones are opened on the restored
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import DeliveryError

from quartstack.metrics import BACKEND_POOL_CONNECTIONS

#: Exceptions after which the channel is still in a known, usable state: the
#: broker answered a publish with a nack or returned it as unroutable.
_CLEAN_FAILURES = (DeliveryError,)


class ChannelPool:
    """At most ``size`` channels; callers wait for a free one (bounded by their timeout)."""

    def __init__(
        self, open_channel: Callable[[], Awaitable[AbstractChannel]], size: int, service: str
    ) -> None:
        self._open_channel = open_channel
        self._size = size
        self._service = service
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AbstractChannel] = []
        self._in_use = 0
        self._users = 0
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._report()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[AbstractChannel]:
        self._users += 1  # waiting, opening or holding: the pool must not close under it
        try:
            async with self._channel() as channel:
                yield channel
        finally:
            self._users -= 1

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        async with self._slots:
            channel = self._take_idle() or await self._open_channel()
            self._in_use += 1
            reusable = False
            try:
                yield channel
                reusable = True
            except _CLEAN_FAILURES:
                reusable = True
                raise
            finally:
                self._in_use -= 1
                if reusable and not self._closed and not channel.is_closed:
                    self._idle.append(channel)
                else:
                    self._discard(channel)
                self._report()

    def _take_idle(self) -> AbstractChannel | None:
        while self._idle:
            channel = self._idle.pop()
            if not channel.is_closed:
                return channel
        return None

    def _discard(self, channel: AbstractChannel) -> None:
        """Close ``channel`` in the background (this may run while being cancelled)."""
        if channel.is_closed:
            return
        task = asyncio.get_running_loop().create_task(_close_quietly(channel))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no caller holds or waits for a channel."""
        deadline = time.monotonic() + timeout
        while self._users and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_close_quietly(c) for c in idle), *self._closing)
        self._report()

    def _report(self) -> None:
        idle = sum(1 for c in self._idle if not c.is_closed)
        BACKEND_POOL_CONNECTIONS.labels(self._service, "in_use").set(self._in_use)
        BACKEND_POOL_CONNECTIONS.labels(self._service, "idle").set(idle)
        BACKEND_POOL_CONNECTIONS.labels(self._service, "max").set(self._size)


async def _close_quietly(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()
