"""ServiceQuart.ensure_async: coroutine functions pass through untouched, everything
else takes Quart's own path (sync functions still run in a thread); its direct
conversion of models answers what quart_schema's would."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel
from quart import Quart, Response
from quart_schema import QuartSchema, validate_response

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


class _Item(BaseModel):
    name: str
    when: datetime
    note: str | None = None


@dataclass
class _Plain:
    name: str


_WHEN = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def _schema_app(direct: bool) -> ServiceQuart:
    """The same views, converted by quart_schema alone or with the direct path."""
    app = ServiceQuart(__name__)
    QuartSchema(app, openapi_path=None, redoc_ui_path=None, scalar_ui_path=None)
    if direct:
        app.convert_models_directly()

    @app.get("/model")
    async def model() -> _Item:
        return _Item(name="a", when=_WHEN)

    @app.get("/pair")
    async def pair() -> tuple[_Item, int]:
        return _Item(name="b", when=_WHEN, note="n"), 201

    @app.get("/validated")
    @validate_response(_Item, 202)
    async def validated() -> tuple[_Item, int]:
        return _Item(name="c", when=_WHEN), 202

    @app.get("/triple")
    async def triple() -> tuple[_Item, int, dict[str, str]]:
        return _Item(name="d", when=_WHEN), 200, {"X-Extra": "1"}

    @app.get("/dataclass")
    async def dataclass_view() -> _Plain:
        return _Plain(name="e")

    @app.get("/response")
    async def response() -> Response:
        return Response("plain", status=203)

    @app.get("/text")
    async def text() -> str:
        return "text"

    return app


async def test_direct_conversion_answers_exactly_what_quart_schema_does():
    direct, reference = _schema_app(True), _schema_app(False)
    assert direct.make_response is not reference.make_response
    for path in ("/model", "/pair", "/validated", "/triple", "/dataclass", "/response", "/text"):
        ours = await direct.test_client().get(path)
        theirs = await reference.test_client().get(path)
        assert ours.status_code == theirs.status_code, path
        assert await ours.get_data() == await theirs.get_data(), path
        assert ours.headers.get("Content-Type") == theirs.headers.get("Content-Type"), path
        assert ours.headers.get("X-Extra") == theirs.headers.get("X-Extra"), path
