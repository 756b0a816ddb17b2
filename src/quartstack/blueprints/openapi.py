"""The OpenAPI document as the service answers: problem responses, parameter rules,
the statuses the web layer adds to every route, non-JSON bodies.

Routes declare what is theirs with decorators (:func:`problems`, :func:`path_param`,
:func:`text_response`, :func:`link`); :class:`ServiceOpenAPIProvider` adds what the cross-cutting
layers answer on every route (400, 413/415 on bodies, 429, 431) and fixes two gaps of
quart-schema: required query parameters, and errors typed ``application/problem+json``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from quart_schema import document_response
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import Rule

from quartstack.auth.authentication import Authentication
from quartstack.auth.scopes import scope_for
from quartstack.blueprints.validation import check_path_param
from quartstack.integrations.redis.rate_limit import PROBE_PATHS
from quartstack.web.problems import PROBLEM_CONTENT_TYPE, ProblemDetails

F = TypeVar("F", bound=Callable[..., Any])

_PATH_PARAMS = "_quartstack_path_params"
_TEXT_RESPONSE = "_quartstack_text_response"
_NO_CONTENT = "_quartstack_no_content"
_LINKS = "_quartstack_links"
_BODY_METHODS = frozenset({"post", "put", "patch"})
_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
_STATUS_TEXT = {
    400: "Malformed request: bad JSON, percent-escapes that are not UTF-8, ambiguous framing",
    413: "Request body over the limit",
    415: "Request body in a content type the service does not accept",
    422: "Invalid path parameter, query string or body (see `errors`)",
    401: "Missing or invalid credential (WWW-Authenticate: Bearer)",
    403: "The credential lacks the scope this route needs (insufficient_scope)",
    429: "Rate limit exceeded (see Retry-After)",
    431: "Request line and headers over 16 KiB",
}


def problems(*statuses: int) -> Callable[[F], F]:
    """Declare in the OpenAPI document that the route may answer these problems."""

    def decorate(func: F) -> F:
        for status in statuses:
            func = document_response(ProblemDetails, status)(func)
        return func

    return decorate


def path_param(name: str, pattern: str, max_length: int) -> Callable[[F], F]:
    """Validate path parameter ``name`` (1..max_length characters of ``pattern``, else a
    422 problem) before the view runs, and document the rule in the OpenAPI document."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        async def view(*args: Any, **kwargs: Any) -> Any:
            check_path_param(name, kwargs[name], pattern, max_length)
            return await func(*args, **kwargs)

        rules = {**getattr(func, _PATH_PARAMS, {}), name: (pattern, max_length)}
        setattr(view, _PATH_PARAMS, rules)
        return view  # type: ignore[return-value]

    return decorate


def text_response(content_type: str, description: str) -> Callable[[F], F]:
    """Document a 200 whose body is not JSON (e.g. the Prometheus exposition)."""

    def decorate(func: F) -> F:
        setattr(func, _TEXT_RESPONSE, (content_type, description))
        return func

    return decorate


def no_content(description: str) -> Callable[[F], F]:
    """Document a 204 (no body), which quart-schema's models cannot express."""

    def decorate(func: F) -> F:
        setattr(func, _NO_CONTENT, description)
        return func

    return decorate


def link(
    status: int, name: str, operation_id: str, parameters: dict[str, str], description: str
) -> Callable[[F], F]:
    """Declare an OpenAPI link: a ``status`` answer of this route feeds ``parameters``
    of operation ``operation_id`` (runtime expressions such as ``$response.body#/id``).
    Clients learn which call follows which; schemathesis's stateful phase chains them
    with real identifiers instead of random ones that only ever reach a 404."""

    def decorate(func: F) -> F:
        declared = {key: {**links} for key, links in getattr(func, _LINKS, {}).items()}
        declared.setdefault(str(status), {})[name] = {
            "operationId": operation_id,
            "parameters": parameters,
            "description": description,
        }
        setattr(func, _LINKS, declared)
        return func

    return decorate


class ServiceOpenAPIProvider(OpenAPIProvider):
    """quart-schema's provider plus what the web layer answers on every route."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        schema = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        components = document["components"]["schemas"]
        for name, definition in {"ProblemDetails": schema, **schema.pop("$defs", {})}.items():
            components.setdefault(name, definition)
        document["components"]["securitySchemes"] = SECURITY_SCHEMES
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in list(operations.items()):
                operations[method] = self._complete(rule, func, method, operation)
        return paths, components

    def build_querystring_parameters(
        self, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        parameters, definitions = super().build_querystring_parameters(model)
        required = {
            field.alias or name for name, field in model.model_fields.items() if field.is_required()
        }
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, definitions

    def _security(self, scope: str) -> list[dict[str, list[str]]] | None:
        """The operation's security requirement as this process enforces it: ``[]`` for
        public routes, the route's scope with ``AUTH_MODE=required``, the metrics token
        when one is set; None (nothing declared) for what is not checked, so the
        document never promises a 401 the service would not send."""
        auth = self._app.extensions.get(Authentication.KEY)
        if not isinstance(auth, Authentication):
            return None
        if scope == "public":
            return []
        if scope == "metrics":
            return [{"metricsToken": []}] if auth.metrics_token is not None else None
        if not auth.required:
            return None
        return [{"bearerAuth": [scope]}, {"apiKeyAuth": [scope]}]

    def _complete(
        self, rule: Rule, func: Any, method: str, operation: dict[str, Any]
    ) -> dict[str, Any]:
        responses = {str(status): value for status, value in operation["responses"].items()}
        operation = {**operation}
        if "requestBody" in operation:  # a documented body is one the route needs
            operation["requestBody"] = {**operation["requestBody"], "required": True}
        text = getattr(func, _TEXT_RESPONSE, None)
        if text is not None:
            content_type, description = text
            responses["200"] = {
                "description": description,
                "content": {content_type: {"schema": {"type": "string"}}},
            }
        empty = getattr(func, _NO_CONTENT, None)
        if empty is not None:
            responses["204"] = {"description": empty}
        for status, links in getattr(func, _LINKS, {}).items():
            responses[status] = {**responses[status], "links": links}
        rules = getattr(func, _PATH_PARAMS, {})
        parameters = []
        for parameter in operation["parameters"]:
            if parameter["in"] == "path" and parameter["name"] in rules:
                pattern, max_length = rules[parameter["name"]]
                schema = {"type": "string", "minLength": 1, "maxLength": max_length}
                parameter = {**parameter, "schema": {**schema, "pattern": pattern}}
            parameters.append(parameter)
        operation["parameters"] = parameters
        added = {400, 431}
        if method in _BODY_METHODS:
            added |= {413, 415}
        if rules or any(p["in"] == "query" for p in parameters):
            added.add(422)
        if rule.rule not in PROBE_PATHS:
            added.add(429)
        security = self._security(scope_for(rule.endpoint, func))
        if security is not None:
            operation["security"] = security
            if security:
                added.add(401)
            if any(requirement.get("bearerAuth") for requirement in security):
                added.add(403)
        for code in sorted(added):
            responses.setdefault(str(code), _problem(_STATUS_TEXT[code]))
        for key, response in responses.items():
            body = response.get("content", {}).get("application/json", {}).get("schema", {})
            code = int(key)
            if code >= 400 and body.get("title") == "ProblemDetails":
                responses[key] = _problem(_STATUS_TEXT.get(code, HTTPStatus(code).phrase))
        operation["responses"] = dict(sorted(responses.items()))
        return operation


#: "Authorize" in /docs offers both: a JWT from the issuer, or an API key. Operations
#: name them only while the service checks them (AUTH_MODE=required, METRICS_TOKEN).
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT from the OIDC issuer (AUTH_JWT_ISSUER), or an API key "
        "(qsk_...) as a bearer token. Needs AUTH_MODE=required to be checked.",
    },
    "apiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key made by `quartstack auth create-key`.",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "METRICS_TOKEN, when set (only /metrics).",
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}}
