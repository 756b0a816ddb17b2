"""Wait for a condition under a deadline. Tests never sleep and assume something has
happened: on a shared, busy machine it may not have yet."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous: other test runs share the CPU, and a deadline only costs time on failure.
DEFAULT_TIMEOUT = 30.0


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    what: str = "the condition",
) -> T:
    """Call ``condition`` (sync or async) until it returns something truthy; return it.
    Fails with an ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {result!r})")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    what: str = "the condition",
) -> T:
    """:func:`wait_until` for code without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {result!r})")
        time.sleep(interval)
