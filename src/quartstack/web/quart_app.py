"""The Quart class the service and the worker are built on.

Quart calls :meth:`~quart.Quart.ensure_async` for every hook and view of every
request (eleven hooks here) and answers it with :func:`inspect.iscoroutinefunction`,
which unwraps methods and partials before it looks at the code flags. Counted with
callgrind on ``GET /health/``: about 6,000 instructions a hook, a tenth of what the
whole web layer adds to a bare Quart app. Plain ``async def`` functions and methods
are recognised here from their code flags directly; anything else (a sync function
Quart must run in a thread, a partial, a mock) takes Quart's own path unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import FunctionType, MethodType
from typing import Any

from quart import Quart

_COROUTINE = inspect.CO_COROUTINE


class ServiceQuart(Quart):
    """:class:`~quart.Quart` with a cheaper ``ensure_async`` for coroutine functions."""

    def ensure_async(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if isinstance(func, FunctionType):
            code = func.__code__
        elif isinstance(func, MethodType) and isinstance(func.__func__, FunctionType):
            code = func.__func__.__code__
        else:
            return super().ensure_async(func)
        if code.co_flags & _COROUTINE:
            return func
        return super().ensure_async(func)
