"""Every route has a scope decision, and the service enforces it: a table-driven test
over ``app.url_map`` (a new route fails here until it declares its scope with
``quartstack.auth.scopes.requires`` and is added to ROUTE_SCOPES), anonymous and
under-scoped calls to each route, the OpenAPI security of each operation, the
``/metrics`` token, the audit line of writes and rate limits per principal."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from quart import Quart

from quartstack.auth.scopes import CREDENTIAL_SCOPES, declared_scope
from tests.support.app import captured_json_logs, running_app
from tests.support.oidc import TestIssuer

#: (rule, method) → the scope it needs. The decision for a new route goes here.
ROUTE_SCOPES = {
    ("/", "GET"): "public",
    ("/openapi.json", "GET"): "public",
    ("/docs", "GET"): "public",
    ("/redoc", "GET"): "public",
    ("/health/", "GET"): "public",
    ("/health/live", "GET"): "public",
    ("/health/startup", "GET"): "public",
    ("/health/ready", "GET"): "public",
    ("/metrics", "GET"): "metrics",
    ("/health/all", "GET"): "read",
    ("/health/<any(vault, postgres, mysql, mongodb, redis, rabbitmq):service>", "GET"): "read",
    ("/examples/vault/secret/<service_name>", "GET"): "read",
    ("/examples/vault/secret/<service_name>/<key>", "GET"): "read",
    ("/examples/database/postgres/query", "GET"): "read",
    ("/examples/database/mysql/query", "GET"): "read",
    ("/examples/database/mongodb/query", "GET"): "read",
    ("/examples/cache/<key>", "GET"): "read",
    ("/examples/cache/<key>", "POST"): "write",
    ("/examples/cache/<key>", "DELETE"): "write",
    ("/examples/messaging/publish", "POST"): "write",
    ("/examples/messaging/queue/<queue_name>/info", "GET"): "read",
    ("/users", "POST"): "write",
    ("/users", "GET"): "read",
    ("/users/stats", "GET"): "read",
    ("/users/<uuid:id>", "GET"): "read",
    ("/users/<uuid:id>", "DELETE"): "write",
    ("/redis/cluster/nodes", "GET"): "admin",
    ("/redis/cluster/slots", "GET"): "admin",
    ("/redis/cluster/info", "GET"): "admin",
    ("/redis/nodes/<node_name>/info", "GET"): "admin",
    ("/redis/cache/responses", "DELETE"): "admin",
}

_SAMPLES = {"uuid": str(uuid.uuid4()), "service": "redis"}


def concrete(rule: str) -> str:
    """A URL that matches ``rule`` (sample values for its variables)."""

    def value(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        return _SAMPLES.get(name, _SAMPLES.get((converter or "").split("(")[0], "sample"))

    return re.sub(r"<(?:([^:>]+):)?([^>]+)>", value, rule)


def routes(app: Quart) -> dict[tuple[str, str], str | None]:
    found = {}
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            view = app.view_functions[rule.endpoint]
            found[(rule.rule, method)] = declared_scope(rule.endpoint, view)
    return found


@pytest.fixture(scope="module")
def issuer():
    with TestIssuer() as server:
        yield server


@pytest.fixture(scope="module")
async def app_and_client(issuer):
    async with running_app(**issuer.settings()) as pair:
        yield pair


async def test_every_route_has_a_scope_decision(app_and_client):
    app, _ = app_and_client
    assert routes(app) == ROUTE_SCOPES


@pytest.mark.parametrize(("route", "scope"), sorted(ROUTE_SCOPES.items()))
async def test_each_route_enforces_its_scope(app_and_client, issuer, route, scope):
    _, client = app_and_client
    rule, method = route
    url = concrete(rule)
    anonymous = await client.open(url, method=method)
    if scope in ("public", "metrics"):  # metrics: open while METRICS_TOKEN is unset
        assert anonymous.status_code not in (401, 403), (route, anonymous.status_code)
        return
    assert anonymous.status_code == 401, route
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    others = " ".join(s for s in CREDENTIAL_SCOPES if s != scope)
    under = await client.open(url, method=method, headers=_bearer(issuer.mint(others)))
    assert under.status_code == 403, route
    assert f'scope="{scope}"' in under.headers["WWW-Authenticate"]
    allowed = await client.open(url, method=method, headers=_bearer(issuer.mint(scope)))
    assert allowed.status_code not in (401, 403), (route, allowed.status_code)


async def test_openapi_declares_the_schemes_and_each_operation_security(app_and_client):
    _, client = app_and_client
    spec = await (await client.get("/openapi.json")).get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "in": "header", "name": "X-API-Key"}
    for (rule, method), scope in ROUTE_SCOPES.items():
        if rule in ("/openapi.json", "/docs", "/redoc"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
        operation = spec["paths"][path][method.lower()]
        if scope == "public":
            assert operation["security"] == [], rule
        elif scope == "metrics":  # METRICS_TOKEN unset: nothing to declare
            assert "security" not in operation and "401" not in operation["responses"]
        else:
            assert {"bearerAuth": [scope]} in operation["security"], rule
            assert {"401", "403"} <= set(operation["responses"]), rule


async def test_a_route_without_a_decision_needs_admin(issuer):
    def prepare(app: Quart) -> None:
        @app.get("/undeclared")
        async def undeclared() -> dict[str, str]:
            return {"ok": "yes"}

    async with running_app(prepare=prepare, **issuer.settings()) as (_app, client):
        read_write = _bearer(issuer.mint("read write"))
        assert (await client.get("/undeclared", headers=read_write)).status_code == 403
        admin = _bearer(issuer.mint("admin"))
        assert (await client.get("/undeclared", headers=admin)).status_code == 200


async def test_metrics_has_its_own_token():
    async with running_app(metrics_token="s3cret-metrics-token") as (_app, client):
        spec = await (await client.get("/openapi.json")).get_json()
        assert spec["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]
        # AUTH_MODE=none: the other routes declare no security (the service checks none)
        assert "security" not in spec["paths"]["/health/all"]["get"]
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers=_bearer("nope"))
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        right = await client.get("/metrics", headers=_bearer("s3cret-metrics-token"))
        assert right.status_code == 200
        # the token guards /metrics only; AUTH_MODE=none leaves the rest open
        assert (await client.get("/health/all")).status_code == 200


async def test_every_write_logs_one_audit_line(app_and_client, issuer):
    _, client = app_and_client
    token = issuer.mint("write", sub="auditor-1")
    with captured_json_logs() as logs:
        response = await client.post(
            "/examples/cache/k?value=do-not-log-me", headers=_bearer(token)
        )
        await client.delete("/examples/cache/k")  # anonymous: 401, audited too
        await client.get("/examples/cache/k", headers=_bearer(issuer.mint("read")))  # no audit
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    audits = [line for line in lines if line.get("logger") == "quartstack.audit"]
    assert [(a["principal"], a["method"], a["route"], a["status"]) for a in audits] == [
        ("jwt:auditor-1", "POST", "/examples/cache/<key>", response.status_code),
        ("anonymous", "DELETE", "/examples/cache/<key>", 401),
    ]
    assert "do-not-log-me" not in logs.getvalue() and token not in logs.getvalue()


async def test_rate_limits_count_per_principal(issuer):
    settings = issuer.settings(rate_limit_enabled=True, rate_limit_health=2, redis_host="127.0.0.1")
    async with running_app(**settings) as (_app, client):
        alice, bob = (_bearer(issuer.mint("read", sub=name)) for name in ("alice", "bob"))
        statuses = [(await client.get("/health/all", headers=alice)).status_code for _ in range(3)]
        assert 429 not in statuses[:2] and statuses[2] == 429
        # same address, another principal: a budget of its own
        assert (await client.get("/health/all", headers=bob)).status_code != 429


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_idempotency_keys_belong_to_their_principal(issuer):
    settings = issuer.settings(redis_host="127.0.0.1")
    async with running_app(**settings) as (_app, client):
        key = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
        alice, bob = (_bearer(issuer.mint("write", sub=name)) for name in ("alice", "bob"))
        url = f"/examples/cache/idem-{uuid.uuid4().hex}?value=v"
        first = await client.post(url, headers={**alice, **key})
        assert first.status_code == 200, await first.get_data()
        again = await client.post(url, headers={**alice, **key})
        assert again.headers.get("Idempotency-Replayed") == "true"
        other = await client.post(url, headers={**bob, **key})
        assert other.status_code == 200 and "Idempotency-Replayed" not in other.headers
        await client.delete(url.split("?")[0], headers=alice)
