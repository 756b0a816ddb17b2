"""Request id, one structured log line per request, and the HTTP Prometheus metrics.

Metrics use the route template (``/examples/cache/{key}``) as ``endpoint`` so
label cardinality stays bounded; unmatched paths share one label.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from functools import lru_cache

from quart import Quart, Response, g, request

from quartstack.logging_setup import request_id_var
from quartstack.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS
from quartstack.web.client_address import client_address

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ENDPOINT = "<unmatched>"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

access_logger = logging.getLogger("quartstack.access")


@lru_cache(maxsize=512)
def route_template(rule: str) -> str:
    """``/examples/cache/<key>`` -> ``/examples/cache/{key}`` (OpenAPI style)."""
    return _CONVERTER.sub(r"{\1}", rule)


def current_endpoint() -> str:
    rule = request.url_rule
    return route_template(rule.rule) if rule is not None else UNMATCHED_ENDPOINT


def _incoming_request_id() -> str:
    candidate = request.headers.get(REQUEST_ID_HEADER)
    if candidate and _VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def init_observability(app: Quart) -> None:
    """Register the hooks; the first ``before_request`` of the app, so errors carry the id."""

    async def start_request() -> None:
        g.request_id = _incoming_request_id()
        g.started = time.perf_counter()
        request_id_var.set(g.request_id)
        g.endpoint = current_endpoint()
        HTTP_IN_PROGRESS.labels(request.method, g.endpoint).inc()
        g.in_progress = True

    async def finish_request(response: Response) -> Response:
        request_id = getattr(g, "request_id", None) or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        endpoint = getattr(g, "endpoint", None) or current_endpoint()
        duration = time.perf_counter() - getattr(g, "started", time.perf_counter())
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method, endpoint).observe(duration)
        access_logger.info(
            "request",
            extra={
                "method": request.method,
                "route": endpoint,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
                "client": client_address(),
                "error_type": getattr(g, "problem_kind", None),
            },
        )
        return response

    async def end_request(_exc: BaseException | None) -> None:
        if getattr(g, "in_progress", False):
            g.in_progress = False
            HTTP_IN_PROGRESS.labels(request.method, g.endpoint).dec()

    app.before_request_funcs.setdefault(None, []).insert(0, start_request)
    app.after_request(finish_request)
    app.teardown_request(end_request)
