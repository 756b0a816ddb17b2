"""The request body is awaited once and reused; the query string validates as quart_schema
would (lists for repeated keys) with the same 422 problem and OpenAPI parameters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, Quart, request
from werkzeug.datastructures import MultiDict

from quartstack.settings import load_settings
from quartstack.web.problems import ProblemHandlers
from quartstack.web.querystring import query_values, validate_query
from quartstack.web.request_body import ProblemRequest


def _app() -> Quart:
    app = Quart("reads")
    app.request_class = ProblemRequest
    ProblemHandlers(load_settings()).init_app(app)
    return app


async def test_the_body_is_awaited_once_then_reused() -> None:
    app = _app()
    seen: dict[str, Any] = {}

    @app.post("/echo")
    async def echo() -> dict[str, Any]:
        first = await app_request().get_data()
        reads = 0
        original = type(app_request().body).__await__

        def counting(body: Any) -> Any:
            nonlocal reads
            reads += 1
            return original(body)

        type(app_request().body).__await__ = counting  # type: ignore[method-assign]
        try:
            seen["again"] = await app_request().get_data()
            seen["text"] = await app_request().get_data(as_text=True)
            seen["json"] = await app_request().get_json()
        finally:
            type(app_request().body).__await__ = original  # type: ignore[method-assign]
        seen["first"], seen["reads"] = first, reads
        seen["uncached"] = await app_request().get_data(cache=False)
        seen["after_uncached"] = await app_request().get_data()
        return {"ok": True}

    response = await app.test_client().post("/echo", json={"a": 1})
    assert response.status_code == 200
    assert seen["first"] == seen["again"] == b'{"a": 1}'
    assert seen["text"] == '{"a": 1}' and seen["json"] == {"a": 1}
    assert seen["reads"] == 0  # every later read came from the cached bytes
    assert seen["uncached"] == b'{"a": 1}'
    assert seen["after_uncached"] == b""  # cache=False freed it, as Quart does


async def test_a_body_that_stops_arriving_is_a_408_problem_after_body_timeout() -> None:
    app = _app()
    app.config["BODY_TIMEOUT"] = 0.2
    reached: list[str] = []

    @app.post("/echo")
    async def echo() -> dict[str, Any]:
        reached.append("handler")
        await app_request().get_data()
        reached.append("read")  # never: the rest of the body does not come
        return {"ok": True}

    # The client stops sending; it disconnects once it has the answer (Quart 0.23 waits
    # for the disconnect before the ASGI call returns, 0.22 cancels the receiver).
    answered = asyncio.Event()
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": b'{"a":', "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    async with asyncio.timeout(10):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 408
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert json.loads(body)["status"] == 408
    assert reached == ["handler"]


def app_request() -> ProblemRequest:
    from quartstack.web.context import current_request

    request = current_request()
    assert isinstance(request, ProblemRequest)
    return request


def test_query_values_read_repeated_keys_as_lists() -> None:
    args = MultiDict([("a", "1"), ("b", "2"), ("b", "3"), ("c[]", "4")])
    assert query_values(args) == {"a": "1", "b": ["2", "3"], "c": ["4"]}


class _Query(BaseModel):
    name: str = Field(min_length=1, max_length=5)
    count: int = 1


async def test_validate_query_passes_the_model_or_answers_422() -> None:
    app = _app()

    @app.get("/q")
    @validate_query(_Query)
    async def view(query_args: _Query) -> dict[str, Any]:
        return query_args.model_dump()

    client = app.test_client()
    ok = await client.get("/q", query_string={"name": "ab", "count": "3"})
    assert ok.status_code == 200 and await ok.get_json() == {"name": "ab", "count": 3}
    bad = await client.get("/q", query_string={"name": "toolong", "count": "x"})
    assert bad.status_code == 422
    assert bad.mimetype == "application/problem+json"
    body = await bad.get_json()
    assert {error["field"] for error in body["errors"]} == {"name", "count"}
    assert "query string" in body["detail"]
    assert getattr(view, "_quart_schema_querystring_schema") is _Query  # documented


async def test_blueprints_are_what_quart_says_for_nested_and_plain_routes() -> None:
    ours, plain = _app(), Quart("plain")
    for app in (ours, plain):
        seen: list[list[str]] = []
        parent, child = Blueprint("parent", "x", url_prefix="/p"), Blueprint("child", "x")

        @child.get("/c")
        async def nested() -> str:
            seen.append(list(request.blueprints))
            return "nested"

        @app.get("/top")
        async def top() -> str:
            seen.append(list(request.blueprints))
            return "top"

        parent.register_blueprint(child, url_prefix="/c")
        app.register_blueprint(parent)
        client = app.test_client()
        assert (await client.get("/p/c/c")).status_code == 200
        assert (await client.get("/top")).status_code == 200
        assert (await client.get("/missing")).status_code == 404
        app.config["seen"] = seen
    assert ours.config["seen"] == plain.config["seen"] == [["parent.child", "parent"], []]
