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

from pydantic import BaseModel
from quart import Quart, Response
from quart_schema.conversion import convert_response_return_value

from quartstack.web.json_provider import OrjsonProvider

_COROUTINE = inspect.CO_COROUTINE
#: Return values quart_schema passes on unchanged.
_LEFT_AS_THEY_ARE = frozenset({Response, str, bytes})


class ServiceQuart(Quart):
    """:class:`~quart.Quart` with a cheaper ``ensure_async`` for coroutine functions, a
    direct path for model responses and JSON written by orjson."""

    json_provider_class = OrjsonProvider

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

    def write_json_with_orjson(self) -> None:
        """Call after ``QuartSchema(app)``, which installs its own JSON provider (Flask's,
        whose ``default`` also takes pydantic values): the same ``default``, with orjson
        writing (:mod:`quartstack.web.json_provider`)."""
        provider = OrjsonProvider(self)
        provider.default = self.json.default  # type: ignore[attr-defined]
        self.json = provider

    def convert_models_directly(self) -> None:
        """Call after ``QuartSchema(app)``: convert what views return with the common
        cases first.

        quart_schema wraps ``make_response`` to turn models into JSON-ready values, and
        sends every return value, a ``Response`` or ``None`` headers included, through a
        chain of ten type tests, twice (value and headers). Pydantic models, ``(model,
        status)`` pairs (``validate_response`` adds ``None`` headers) and the values it
        would leave alone are converted here as it would convert them; anything else still
        goes through quart_schema.
        """
        make_response = Quart.make_response.__get__(self)
        config = self.config

        async def convert_then_make_response(result: Any) -> Any:
            if not config["QUART_SCHEMA_CONVERT_CASING"]:
                kind = type(result)
                if kind is tuple:  # (model, status) or, from validate_response, (…, None)
                    if (
                        1 < len(result) < 4
                        and isinstance(result[0], BaseModel)
                        and type(result[1]) is int
                        and (len(result) == 2 or result[2] is None)
                    ):
                        options = config["QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"] or {}
                        return await make_response((result[0].model_dump(**options), result[1]))
                elif isinstance(result, BaseModel):
                    options = config["QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"] or {}
                    return await make_response(result.model_dump(**options))
                elif kind in _LEFT_AS_THEY_ARE:
                    return await make_response(result)
            return await make_response(convert_response_return_value(result))

        self.make_response = convert_then_make_response  # type: ignore[method-assign]
