"""Up to ``size`` confirm-mode AMQP channels, each shared by concurrent publishers.

A channel in publisher-confirm mode numbers every publish and the broker acks
(or nacks, or returns) each one by that number, so many publishes can be
outstanding on one channel and each caller still awaits its own answer: lending
a channel to one caller at a time only added a checkout and a wait. aiormq writes
a publish's frames into the connection's queue as one unit under the channel's
lock, so a caller cancelled mid-publish cannot leave half a message on the
channel for the next one.

A channel the broker closed, or whose connection was lost, fails every publish
outstanding on it (the caller reports that, never a 200) and is replaced by a
new one on the next publish that picks its slot. Anything that may close a
channel on purpose (declaring a queue that conflicts) must not run here: it
would fail the other publishers' confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aio_pika.abc import AbstractChannel

from quartstack.metrics import BACKEND_POOL_CONNECTIONS


class _Slot:
    """One channel (opened lazily, reopened after it closed) and its publishes in flight."""

    __slots__ = ("channel", "opening", "outstanding")

    def __init__(self) -> None:
        self.channel: AbstractChannel | None = None
        self.opening: asyncio.Task[AbstractChannel] | None = None
        self.outstanding = 0

    def usable(self) -> bool:
        return self.channel is not None and not self.channel.is_closed


class ChannelPool:
    """``size`` slots; a publisher takes the slot with the fewest publishes in flight."""

    def __init__(
        self, open_channel: Callable[[], Awaitable[AbstractChannel]], size: int, service: str
    ) -> None:
        self._open_channel = open_channel
        self._size = size
        self._service = service
        self._slots = [_Slot() for _ in range(size)]
        self._users = 0
        self._idle = asyncio.Event()  # set while _users is 0: what drained() waits for
        self._idle.set()
        self._closed = False
        # Read at scrape time, not kept up to date on every publish.
        BACKEND_POOL_CONNECTIONS.labels(service, "in_use").set_function(lambda: self._count(True))
        BACKEND_POOL_CONNECTIONS.labels(service, "idle").set_function(lambda: self._count(False))
        BACKEND_POOL_CONNECTIONS.labels(service, "max").set(size)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Count a publish as using this pool from the moment it chose the pool, before
        its first await (declaring the queue): :meth:`drained` must not let a credential
        rotation close the connection under a publish that has not reached
        :meth:`acquire` yet."""
        if self._closed:
            raise RuntimeError("channel pool is closed")
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def _enter(self) -> None:
        self._users += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._users -= 1
        if not self._users:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[AbstractChannel]:
        """A channel to publish on, shared with other callers for the duration."""
        if self._closed:
            raise RuntimeError("channel pool is closed")
        slot = self._pick()
        slot.outstanding += 1
        self._enter()  # opening or publishing: the pool must not close under it
        try:
            channel = slot.channel
            if channel is None or channel.is_closed:
                channel = await self._reopen(slot)
            yield channel
        finally:
            slot.outstanding -= 1
            self._leave()

    def _pick(self) -> _Slot:
        """The least busy slot, preferring an open channel over opening a new one."""
        best = self._slots[0]
        best_key = (best.outstanding, not best.usable())
        for slot in self._slots[1:]:
            key = (slot.outstanding, not slot.usable())
            if key < best_key:
                best, best_key = slot, key
        return best

    async def _reopen(self, slot: _Slot) -> AbstractChannel:
        """Open the slot's channel once for every caller waiting on it. Shielded: a
        caller giving up must not leave a half-open channel behind."""
        if slot.opening is None or slot.opening.done():
            slot.opening = asyncio.get_running_loop().create_task(self._open_into(slot))
            slot.opening.add_done_callback(_consume_exception)
        return await asyncio.shield(slot.opening)

    async def _open_into(self, slot: _Slot) -> AbstractChannel:
        channel = await self._open_channel()
        if self._closed:
            await _close_quietly(channel)
            raise RuntimeError("channel pool is closed")
        slot.channel = channel
        return channel

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no caller is publishing or opening."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        opening = [s.opening for s in self._slots if s.opening is not None]
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        channels = [s.channel for s in self._slots if s.channel is not None]
        for slot in self._slots:
            slot.channel = None
        await asyncio.gather(*(_close_quietly(c) for c in channels))

    def _count(self, busy: bool) -> int:
        """Open channels with (``busy``) or without publishes in flight."""
        return sum(1 for s in self._slots if s.usable() and (s.outstanding > 0) == busy)


async def _close_quietly(channel: AbstractChannel) -> None:
    with contextlib.suppress(Exception):
        await channel.close()


def _consume_exception(task: asyncio.Task[AbstractChannel]) -> None:
    """Mark a failed open as seen when every waiter gave up on it."""
    if not task.cancelled():
        task.exception()
