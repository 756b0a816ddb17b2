"""The cross-cutting web layer, in-process with the lifespan running (no backend needed)."""

from __future__ import annotations

import json
import logging
from urllib.parse import unquote

from quart import request

from quartstack.app import create_app
from quartstack.lifecycle import lifecycle
from quartstack.settings import load_settings
from quartstack.web.observability import route_template
from tests.support.app import captured_json_logs, metric_value, running_app
from tests.support.net import free_port
from tests.support.vault import VaultTestServer

PROBLEM = "application/problem+json"
#: quart-schema's own pages: the OpenAPI document and its viewers.
DOCUMENTATION_ENDPOINTS = {"openapi", "swagger_ui", "redoc_ui", "scalar_ui", "static"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _problem(response, status: int, kind: str) -> dict:
    assert response.status_code == status
    assert response.content_type == PROBLEM
    body = await response.get_json()
    assert body["type"] == f"/problems/{kind}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert body["instance"] == request_path(response)
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def request_path(response) -> str:
    return response.request_path


def _app_with_test_routes(**settings):
    app = create_app(load_settings(rate_limit_enabled=False, **settings))

    @app.post("/_test/json")
    async def echo_json():
        return {"received": await request.get_json()}

    @app.get("/_test/boom")
    async def boom():
        raise RuntimeError("exploded with internal detail xyzzy")

    return app


async def _client(app):
    return app.test_client()


async def _call(app, method, path, **kw):
    async with app.test_app() as test_app:
        await lifecycle(app).wait_started()
        response = await test_app.test_client().open(path, method=method, **kw)
        response.request_path = unquote(path.split("?")[0])
        return response


async def test_404_and_405_with_allow():
    app = _app_with_test_routes()
    await _problem(await _call(app, "GET", "/nope"), 404, "not-found")
    response = await _call(app, "DELETE", "/health/")
    await _problem(response, 405, "method-not-allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


async def test_body_errors():
    app = _app_with_test_routes(max_body_bytes=2048)
    response = await _call(
        app, "POST", "/_test/json", data=b'{"a": ', headers={"Content-Type": "application/json"}
    )
    await _problem(response, 400, "malformed-json")
    # Quart's test client sends no Content-Length by itself; real clients always do.
    response = await _call(
        app, "POST", "/_test/json", data=b'{"a": 1}', headers={"Content-Length": "8"}
    )
    await _problem(response, 400, "missing-content-type")
    response = await _call(
        app,
        "POST",
        "/_test/json",
        data=b"<a/>",
        headers={"Content-Type": "application/xml", "Content-Length": "4"},
    )
    await _problem(response, 415, "unsupported-media-type")
    response = await _call(
        app,
        "POST",
        "/_test/json",
        data=b"x" * 4096,
        headers={"Content-Type": "application/json", "Content-Length": "4096"},
    )
    await _problem(response, 413, "payload-too-large")
    ok = await _call(
        app,
        "POST",
        "/_test/json",
        data=b'{"a": 1}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200 and (await ok.get_json()) == {"received": {"a": 1}}


async def test_chunked_body_over_the_limit_is_413():
    app = _app_with_test_routes(max_body_bytes=2048)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with client.request(
            "/_test/json",
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            },
        ) as connection:
            for _ in range(5):
                await connection.send(b"x" * 1024)
            await connection.send_complete()
            await connection.receive()
        response = await connection.as_response()
        assert response.status_code == 413
        assert response.content_type == PROBLEM


async def test_422_lists_the_invalid_fields():
    app = _app_with_test_routes()
    response = await _call(app, "POST", "/examples/cache/k?value=v&ttl=0")
    body = await _problem(response, 422, "validation-error")
    assert body["errors"] == [
        {"field": "ttl", "message": body["errors"][0]["message"], "type": "greater_than_equal"}
    ]
    response = await _call(app, "GET", "/examples/cache/bad%20key")
    body = await _problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "path.key"


async def test_unhandled_exception_is_500_without_traceback_except_in_debug():
    app = _app_with_test_routes()
    with captured_json_logs(logging.ERROR) as logs:
        response = await _call(app, "GET", "/_test/boom")
    body = await _problem(response, 500, "internal-error")
    assert "xyzzy" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    logged = [json.loads(line) for line in logs.getvalue().splitlines()]
    error = next(entry for entry in logged if entry["message"] == "unhandled exception")
    assert "xyzzy" in error["traceback"] and error["request_id"] == body["request_id"]
    debug = _app_with_test_routes(debug=True)
    body = await (await _call(debug, "GET", "/_test/boom")).get_json()
    assert "Traceback" in body["detail"] and "xyzzy" in body["detail"]


async def test_request_id_kept_when_valid_and_replaced_otherwise():
    app = _app_with_test_routes()
    kept = await _call(app, "GET", "/health/", headers={"X-Request-ID": "abc.DEF_123-x"})
    assert kept.headers["X-Request-ID"] == "abc.DEF_123-x"
    for bad in ["x" * 129, "has space", "semi;colon", "ünïcode"]:
        replaced = await _call(app, "GET", "/health/", headers={"X-Request-ID": bad})
        assert replaced.headers["X-Request-ID"] != bad
        assert len(replaced.headers["X-Request-ID"]) == 32
    missing = await _call(app, "GET", "/nope", headers={"X-Request-ID": "trace-1"})
    assert missing.headers["X-Request-ID"] == "trace-1"
    assert (await missing.get_json())["request_id"] == "trace-1"


async def test_cors_allow_list_and_debug_any_origin():
    app = _app_with_test_routes(cors_origins=["https://ok.example"])
    allowed = await _call(app, "GET", "/health/", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    denied = await _call(app, "GET", "/health/", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in denied.headers
    preflight = await _call(
        app,
        "OPTIONS",
        "/examples/cache/k",
        headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["Access-Control-Max-Age"] == "600"
    debug = _app_with_test_routes(debug=True)
    anyone = await _call(debug, "GET", "/health/", headers={"Origin": "https://x.example"})
    assert anyone.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in anyone.headers


async def test_openapi_documents_every_route():
    """Every route the app serves, with each of its methods, is in the OpenAPI document,
    and the document has nothing the app does not serve. Only quart-schema's own pages
    (the document itself and its viewers) are left out."""
    app = create_app(load_settings(rate_limit_enabled=False))
    spec = await (await _call(app, "GET", "/openapi.json")).get_json()
    paths = spec["paths"]
    served = {
        (route_template(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in DOCUMENTATION_ENDPOINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert ("/examples/cache/{key}", "delete") in served  # the map is the real one
    documented = {
        (path, method) for path, item in paths.items() for method in item if method in HTTP_METHODS
    }
    assert sorted(served - documented) == []
    assert sorted(documented - served) == []
    cache = paths["/examples/cache/{key}"]
    assert {"get", "post", "delete"} <= set(cache)
    assert "200" in cache["get"]["responses"] and "422" in cache["get"]["responses"]


async def test_root_and_health_routes():
    async with running_app() as (_, c):
        root = await (await c.get("/")).get_json()
        assert root["name"] == "quartstack" and root["docs"] == "/docs"
        assert root["examples"]["cache"] == "/examples/cache/{key}"
        for path in ["/health/", "/health/live"]:
            assert await (await c.get(path)).get_json() == {"status": "ok"}
        assert await (await c.get("/health/startup")).get_json() == {"status": "started"}
        ready = await c.get("/health/ready")
        assert ready.status_code == 200
        assert (await ready.get_json())["status"] == "ready"
        everything = await (await c.get("/health/all")).get_json()
        assert everything["status"] == "healthy"
        assert everything["services"]["postgres"]["status"] == "disabled"
        unconfigured = await c.get("/health/postgres")
        assert unconfigured.status_code == 503
        backend = await c.get("/examples/database/postgres/query")
        assert backend.status_code == 503 and backend.content_type == PROBLEM
        assert backend.headers["Retry-After"]


async def test_startup_and_readiness_semantics():
    with VaultTestServer() as vault:
        vault.set_latency(60)  # startup waits on Vault until the test releases it below
        app = create_app(
            load_settings(
                vault_addr=vault.url,
                vault_token=vault.root_token,
                vault_timeout_seconds=60,
                rate_limit_enabled=False,
            )
        )
        async with app.test_app() as test_app:
            client = test_app.test_client()
            starting = await client.get("/health/startup")
            assert starting.status_code == 503
            assert await starting.get_json() == {"status": "starting"}
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert (await ready.get_json())["checks"]["startup"] == "starting"
            assert (await client.get("/health/live")).status_code == 200
            vault.set_latency(0)
            await lifecycle(app).wait_started()
            assert (await client.get("/health/startup")).status_code == 200
            lifecycle(app).begin_drain()
            draining = await client.get("/health/ready")
            assert draining.status_code == 503
            assert (await draining.get_json())["checks"]["shutdown"] == "draining"
            assert (await client.get("/health/live")).status_code == 200


async def test_readiness_fails_when_a_required_backend_is_down():
    async with running_app(
        redis_host="127.0.0.1", redis_port=free_port(), required_backends=["redis"]
    ) as (_, c):
        ready = await c.get("/health/ready")
        assert ready.status_code == 503
        body = await ready.get_json()
        assert body["status"] == "not_ready" and body["checks"]["redis"].startswith("unhealthy")
    async with running_app(
        redis_host="127.0.0.1", redis_port=6379, required_backends=["redis"]
    ) as (_, c):
        assert (await c.get("/health/ready")).status_code == 200


async def test_metrics_use_route_templates_and_logs_have_request_fields():
    async with running_app(redis_host="127.0.0.1", redis_port=6379) as (_, c):
        before = metric_value(
            "http_requests_total", method="GET", endpoint="/examples/cache/{key}", status="200"
        )
        unmatched = metric_value(
            "http_requests_total", method="GET", endpoint="<unmatched>", status="404"
        )
        with captured_json_logs() as logs:
            for key in ("a1", "b2", "c3"):
                await c.get(f"/examples/cache/{key}", headers={"X-Request-ID": f"req-{key}"})
            await c.get("/no/such/path/1")
            await c.get("/no/such/path/2")
        assert (
            metric_value(
                "http_requests_total", method="GET", endpoint="/examples/cache/{key}", status="200"
            )
            == before + 3
        )
        assert (
            metric_value("http_requests_total", method="GET", endpoint="<unmatched>", status="404")
            == unmatched + 2
        )
        text = (await (await c.get("/metrics")).get_data()).decode()
        assert "/examples/cache/a1" not in text and "/no/such/path" not in text
        assert 'http_request_duration_seconds_bucket{endpoint="/examples/cache/{key}"' in text
        assert 'app_info{name="quartstack"' in text
    access = [
        json.loads(line) for line in logs.getvalue().splitlines() if '"quartstack.access"' in line
    ]
    entry = next(e for e in access if e["request_id"] == "req-a1")
    assert entry["method"] == "GET" and entry["route"] == "/examples/cache/{key}"
    assert entry["status"] == 200 and entry["duration_ms"] >= 0 and entry["client"]
    assert entry["path"] == "/examples/cache/a1"
