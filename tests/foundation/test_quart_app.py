"""ServiceQuart.ensure_async: coroutine functions pass through untouched, everything
else takes Quart's own path (sync functions still run in a thread)."""

from __future__ import annotations

import functools
import threading

from quart import Quart

from quartstack.web.quart_app import ServiceQuart


async def _coroutine_function() -> str:
    return "async"


class _Hooks:
    async def method(self) -> str:
        return "method"

    def sync_method(self) -> str:
        return threading.current_thread().name


def test_coroutine_functions_and_methods_are_returned_as_they_are():
    app = ServiceQuart(__name__)
    hooks = _Hooks()
    bound = hooks.method
    assert app.ensure_async(_coroutine_function) is _coroutine_function
    assert app.ensure_async(bound) is bound


async def test_sync_functions_and_others_get_what_plain_quart_gives_them():
    app, plain = ServiceQuart(__name__), Quart(__name__)
    loop_thread = threading.current_thread().name
    for func in (_Hooks().sync_method, lambda: threading.current_thread().name):
        wrapped = app.ensure_async(func)
        assert wrapped is not func
        assert await wrapped() != loop_thread  # ran in a worker thread, as with Quart
        assert type(plain.ensure_async(func)) is type(wrapped)
    partial = functools.partial(_coroutine_function)
    assert app.ensure_async(partial) is plain.ensure_async(partial)
