"""RFC 7807 / 9457 problem details: the one shape every error response takes.

Handlers raise :class:`Problem` (or a backend error from
:mod:`quartstack.resilience`); the error handlers registered by
:class:`ProblemHandlers` turn everything, including framework errors and
unexpected exceptions, into ``application/problem+json``.
"""

from __future__ import annotations

import json
import logging
import traceback
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field
from quart import Quart, Response, g, request
from quart_rate_limiter import RateLimitExceeded
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from quartstack.metrics import HTTP_ERRORS
from quartstack.redaction import redact
from quartstack.resilience import BackendError
from quartstack.settings import Settings

PROBLEM_CONTENT_TYPE = "application/problem+json"

logger = logging.getLogger("quartstack.errors")


class FieldError(BaseModel):
    """One invalid input field."""

    field: str
    message: str
    type: str


class ProblemDetails(BaseModel):
    """The body of every error response (documented in the OpenAPI schema)."""

    type: str = Field(description="Stable path naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path")
    request_id: str
    errors: list[FieldError] | None = None


class Problem(Exception):
    """An error a handler wants the client to see as problem+json."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.errors = errors


def validation_problem(where: str, field: str, message: str, type: str = "value_error") -> Problem:
    """The 422 for one invalid ``field`` found by our own checks, in the same shape as
    quart-schema's errors so clients parse one format."""
    return Problem(
        422,
        "validation-error",
        f"The {where} is invalid.",
        title="Validation failed",
        errors=[{"field": field, "message": message, "type": type}],
    )


def problem_body(
    status: int, kind: str, detail: str, instance: str, request_id: str, *, title: str | None = None
) -> dict[str, Any]:
    """The RFC 7807 fields every problem carries (also for answers sent at the ASGI
    level, outside Quart's request context)."""
    return {
        "type": f"/problems/{kind}",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": redact(detail),
        "instance": instance,
        "request_id": request_id,
    }


def problem_response(
    status: int,
    kind: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> Response:
    """Build a problem+json response and count it in ``http_errors_total``."""
    body = problem_body(
        status, kind, detail, _instance(), getattr(g, "request_id", ""), title=title
    )
    if errors is not None:
        body["errors"] = errors
    response = Response(
        json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )
    HTTP_ERRORS.labels(kind, str(status)).inc()
    g.problem_kind = kind
    return response


def _instance() -> str:
    try:
        return request.path
    except RuntimeError:  # outside a request context
        return ""


# Framework errors the app can meet (Hypercorn answers some 400/431 itself, before the app);
# any other status becomes ``http-<status>``. README's error table lists each one
# (tests/foundation/test_error_table.py).
_HTTP_KINDS: dict[int, str] = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
}


def _validation_errors(exc: RequestSchemaValidationError) -> list[dict[str, str]]:
    source = exc.validation_error
    errors_of = getattr(source, "errors", None)
    if not callable(errors_of):
        return [{"field": "body", "message": str(source), "type": "invalid"}]
    result = []
    for error in errors_of(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error.get("loc", ())) or "body"
        result.append({"field": location, "message": error["msg"], "type": error["type"]})
    return result


def _validation_where(exc: RequestSchemaValidationError) -> str:
    name = type(exc).__name__
    if "Querystring" in name:
        return "query string"
    if "Headers" in name:
        return "headers"
    return "request body"


class ProblemHandlers:
    """The error handlers that turn every error into problem+json."""

    KEY = "quartstack.problem_handlers"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self

        @app.errorhandler(Problem)
        async def _problem(exc: Problem) -> Response:
            return problem_response(
                exc.status,
                exc.kind,
                exc.detail,
                title=exc.title,
                headers=exc.headers,
                errors=exc.errors,
            )

        @app.errorhandler(BackendError)
        async def _backend(exc: BackendError) -> Response:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
            logger.warning(
                "backend error",
                extra={"service": exc.service, "problem": exc.kind, "cause": exc.cause_name},
            )
            return problem_response(exc.status, exc.kind, str(exc), headers=headers)

        @app.errorhandler(RequestSchemaValidationError)
        async def _validation(exc: RequestSchemaValidationError) -> Response:
            return problem_response(
                422,
                "validation-error",
                f"The {_validation_where(exc)} is invalid.",
                title="Validation failed",
                errors=_validation_errors(exc),
            )

        @app.errorhandler(RateLimitExceeded)
        async def _rate_limited(exc: RateLimitExceeded) -> Response:
            headers = dict(exc.get_headers())
            return problem_response(
                429,
                "rate-limited",
                "Too many requests; retry after the indicated delay.",
                headers=headers,
            )

        @app.errorhandler(HTTPException)
        async def _http(exc: HTTPException) -> Response:
            status = exc.code or 500
            headers: dict[str, str] = {}
            if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
                headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            for name, value in exc.get_headers():
                if name.lower() not in {"content-type", "content-length"}:
                    headers.setdefault(name, value)
            kind = _HTTP_KINDS.get(status, f"http-{status}")
            detail = exc.description or HTTPStatus(status).phrase
            return problem_response(status, kind, detail, headers=headers)

        @app.errorhandler(Exception)
        async def _unexpected(exc: Exception) -> Response:
            logger.error(
                "unhandled exception",
                extra={"exc_type": type(exc).__name__, "traceback": traceback.format_exc()},
            )
            detail = "An unexpected error occurred; it has been logged with the request id."
            if app.config.get("DEBUG"):
                detail = redact("".join(traceback.format_exception(exc)))
            return problem_response(500, "internal-error", detail)
