"""The OpenAPI document is valid and describes the service as it answers: errors as
problem+json with the problem schema, parameter rules, required query parameters, the
statuses the web layer adds, ``/metrics`` as text; real answers match it."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.support.app import running_app

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def spec_and_app():
    async with running_app(max_body_bytes=2048) as (_app, client):
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        yield await response.get_json(), client


async def test_the_document_is_valid_openapi_3_1(spec_and_app):
    spec, _ = spec_and_app
    validate(spec)


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return spec["paths"][path][method.lower()]


async def test_errors_are_problem_json_with_the_problem_schema(spec_and_app):
    spec, _ = spec_and_app
    assert "ProblemDetails" in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"400", "431"} <= set(responses), (method, path)
            for status, response in responses.items():
                content = response.get("content", {})
                if PROBLEM in content:
                    assert content[PROBLEM]["schema"] == {
                        "$ref": "#/components/schemas/ProblemDetails"
                    }
                if int(status) >= 400 and path.startswith("/examples"):
                    assert list(content) == [PROBLEM], (method, path, status)


async def test_parameters_carry_their_rules(spec_and_app):
    spec, _ = spec_and_app
    expected = {
        ("get", "/examples/cache/{key}", "key"): (r"^[a-zA-Z0-9_:.-]+$", 200),
        ("get", "/examples/messaging/queue/{queue_name}/info", "queue_name"): (
            r"^[a-zA-Z0-9_.-]+$",
            100,
        ),
        ("get", "/examples/vault/secret/{service_name}/{key}", "service_name"): (
            r"^[a-zA-Z0-9_-]+$",
            50,
        ),
        ("get", "/redis/nodes/{node_name}/info", "node_name"): (r"^[a-zA-Z0-9_.-]+$", 100),
    }
    for (method, path, name), (pattern, max_length) in expected.items():
        params = {p["name"]: p for p in _operation(spec, method, path)["parameters"]}
        schema = params[name]["schema"]
        assert schema["pattern"] == pattern and schema["maxLength"] == max_length
        assert schema["minLength"] == 1
    required = {
        ("post", "/examples/cache/{key}"): {"key", "value"},
        ("post", "/examples/messaging/publish"): {"queue_name"},
        ("delete", "/redis/cache/responses"): {"pattern"},
    }
    for (method, path), names in required.items():
        params = _operation(spec, method, path)["parameters"]
        assert {p["name"] for p in params if p.get("required")} == names


async def test_statuses_of_the_web_layer_are_documented(spec_and_app):
    spec, _ = spec_and_app
    publish = _operation(spec, "post", "/examples/messaging/publish")["responses"]
    assert {"400", "413", "415", "422", "429", "431", "503", "504"} <= set(publish)
    assert "429" not in _operation(spec, "get", "/health/live")["responses"]  # a probe
    metrics = _operation(spec, "get", "/metrics")["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]


# (source method, path, status) -> {link name: (target method, path)}: resources a route
# creates or names, addressable by another route (the stateful fuzz phase follows these)
LINKS = {
    ("post", "/users", "201"): {
        "GetUser": ("get", "/users/{id}"),
        "DeleteUser": ("delete", "/users/{id}"),
    },
    ("get", "/users/{id}", "200"): {"DeleteUser": ("delete", "/users/{id}")},
    ("delete", "/users/{id}", "204"): {"GetUser": ("get", "/users/{id}")},
    ("post", "/examples/cache/{key}", "200"): {
        "ReadKey": ("get", "/examples/cache/{key}"),
        "DeleteKey": ("delete", "/examples/cache/{key}"),
    },
    ("delete", "/examples/cache/{key}", "200"): {"ReadKey": ("get", "/examples/cache/{key}")},
    ("post", "/examples/messaging/publish", "200"): {
        "QueueInfo": ("get", "/examples/messaging/queue/{queue_name}/info")
    },
    ("get", "/examples/vault/secret/{service_name}", "200"): {
        "ReadSecretKey": ("get", "/examples/vault/secret/{service_name}/{key}")
    },
}


async def test_links_lead_to_real_operations_and_values(spec_and_app):
    spec, _ = spec_and_app
    by_id = {
        operation["operationId"]: (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    found = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            source_params = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            source_params |= {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            for status, response in operation["responses"].items():
                if "links" not in response:
                    continue
                content = response.get("content", {}).get("application/json", {})
                body = _resolve(spec, content.get("schema", {}))
                targets = found[(method, path, status)] = {}
                for name, link in response["links"].items():
                    target_method, target_path, target = by_id[link["operationId"]]
                    targets[name] = (target_method, target_path)
                    target_params = {p["name"] for p in target["parameters"]}
                    assert set(link["parameters"]) <= target_params, (path, name)
                    for expression in link["parameters"].values():
                        kind, _, where = expression.partition("#/")
                        if kind == "$response.body":
                            assert where in body.get("properties", {}), (path, name, expression)
                        else:
                            source = expression.rpartition(".")[2]
                            assert expression.startswith("$request."), expression
                            assert source in source_params, (path, name, expression)
    assert found == LINKS


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return spec["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    return schema


# (method, path, body, headers, expected status) answered without any backend configured
SAMPLES = [
    ("GET", "/", None, {}, 200),
    ("GET", "/health/", None, {}, 200),
    ("GET", "/health/live", None, {}, 200),
    ("GET", "/health/ready", None, {}, 200),
    ("GET", "/health/redis", None, {}, 503),
    ("GET", "/health/all", None, {}, 200),
    ("GET", "/metrics", None, {}, 200),
    ("GET", "/examples/cache/bad%20key", None, {}, 422),
    ("GET", "/examples/cache/k", None, {}, 503),
    ("GET", "/examples/cache/k?x=%ff", None, {}, 400),
    ("POST", "/examples/cache/k", None, {}, 422),
    ("DELETE", "/examples/cache/k", None, {}, 503),
    ("POST", "/examples/messaging/publish", b"{}", {"Content-Type": "application/json"}, 422),
    (
        "POST",
        "/examples/messaging/publish?queue_name=q",
        b"<a/>",
        {"Content-Type": "application/xml", "Content-Length": "4"},
        415,
    ),
    (
        "POST",
        "/examples/messaging/publish?queue_name=q",
        b"x" * 4096,
        {"Content-Type": "application/json", "Content-Length": "4096"},
        413,
    ),
    ("GET", "/examples/messaging/queue/../info", None, {}, 422),
    ("GET", "/examples/vault/secret/x", None, {}, 503),
    ("GET", "/examples/vault/secret/x/bad%21", None, {}, 422),
    ("GET", "/examples/database/postgres/query", None, {}, 503),
    ("DELETE", "/redis/cache/responses", None, {}, 422),
    ("GET", "/redis/cluster/nodes", None, {}, 503),
    ("GET", "/redis/nodes/bad%21/info", None, {}, 422),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), SAMPLES)
async def test_real_answers_match_the_document(spec_and_app, method, path, body, headers, status):
    spec, client = spec_and_app
    response = await client.open(path, method=method, data=body, headers=headers)
    assert response.status_code == status, await response.get_data()
    template = _template(spec, path.split("?")[0])
    documented = _operation(spec, method, template)["responses"]
    assert str(status) in documented, (method, template, status)
    media_type = response.content_type.split(";")[0]
    content = documented[str(status)]["content"]
    assert media_type in content, (method, template, status, media_type)
    if media_type.endswith("json"):
        schema = {**content[media_type]["schema"], "components": spec["components"]}
        OAS31Validator(schema).validate(await response.get_json())


def _template(spec: dict[str, Any], path: str) -> str:
    if path in spec["paths"]:
        return path
    parts = path.split("/")
    for template in spec["paths"]:
        pieces = template.split("/")
        if len(pieces) == len(parts) and all(
            p == t or (t.startswith("{") and p) for p, t in zip(parts, pieces, strict=True)
        ):
            return template
    raise AssertionError(f"no documented path for {path}")
