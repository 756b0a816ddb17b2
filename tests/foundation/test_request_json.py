"""JSON request bodies are parsed strictly (RFC 8259): every body Python's parser would
turn into a 500 or into a value that cannot be encoded again is a 400 malformed-json."""

from __future__ import annotations

import pytest
from quart import request

from quartstack.web.request_body import MAX_JSON_DEPTH, json_object_body
from tests.foundation.test_web_layer import _app_with_test_routes, _call, _problem

BAD_BODIES = {
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "nested 100000 deep": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested past the limit": b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    "not UTF-8": b'{"a": "\xff\xfe"}',
    "lone surrogate": b'{"a": "\\ud800"}',
    "lone surrogate key": b'{"\\udfff": 1}',
    "NaN": b'{"a": NaN}',
    "Infinity": b'{"a": Infinity}',
    "-Infinity": b'{"a": [-Infinity]}',
    "overflow to inf": b'{"a": 1e400}',
    "negative overflow": b'{"a": -1e400}',
    "5000-digit integer": b'{"a": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_hostile_json_bodies_are_400_malformed_json(body):
    app = _app_with_test_routes()
    response = await _call(
        app, "POST", "/_test/json", data=body, headers={"Content-Type": "application/json"}
    )
    problem = await _problem(response, 400, "malformed-json")
    assert body[:50].decode("latin-1") not in problem["detail"]


GOOD_BODIES = {
    "nested at the limit": (
        b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
        eval("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH),
    ),
    "brackets inside strings": (b'{"a": "' + b"[{" * 500 + b'"}', {"a": "[{" * 500}),
    "escaped quote then brackets": (b'["\\"' + b"[" * 300 + b'"]', ['"' + "[" * 300]),
    "surrogate pair": (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),
    "escaped backslash before u": (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),
    "tiny float": (b'{"a": 1e-400}', {"a": 0.0}),
    "big float": (b'{"a": 1.7e308}', {"a": 1.7e308}),
}


@pytest.mark.parametrize(("body", "value"), GOOD_BODIES.values(), ids=GOOD_BODIES.keys())
async def test_valid_json_still_accepted(body, value):
    app = _app_with_test_routes()
    response = await _call(
        app, "POST", "/_test/json", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, await response.get_data()
    assert (await response.get_json())["received"] == value


async def test_a_body_that_is_not_an_object_is_a_422_like_every_validation_error():
    """Our own checks answer in quart-schema's shape, so clients parse one format."""
    app = _app_with_test_routes()

    @app.post("/_test/object")
    async def echo_object():
        return {"received": json_object_body(await request.get_json())}

    response = await _call(
        app, "POST", "/_test/object", data=b"[1]", headers={"Content-Type": "application/json"}
    )
    problem = await _problem(response, 422, "validation-error")
    assert problem["title"] == "Validation failed"
    assert problem["detail"] == "The request body is invalid."
    assert problem["errors"] == [
        {"field": "body", "message": "must be a JSON object", "type": "dict_type"}
    ]
