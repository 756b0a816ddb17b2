"""Request id, one structured log line per request, and the HTTP Prometheus metrics.

Metrics use the route template (``/examples/cache/{key}``) as ``endpoint`` so
label cardinality stays bounded; unmatched paths share one label.

These hooks run on every request, so they are kept lean: one state object per
request, the route's metric counters looked up once (web/http_metrics.py), one log
call whose fixed-set values (method, route, client, request id) were masked once and marked
:class:`~quartstack.log_masking.Checked`, so the formatter searches only the path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from quart import Quart, Response

from quartstack.log_masking import Checked, checked
from quartstack.logging_setup import log_info, request_id_var
from quartstack.metrics import HTTP_METRICS
from quartstack.settings import Settings
from quartstack.tracing import state as tracing_state
from quartstack.tracing.exemplars import current_exemplar
from quartstack.web.client_address import client_address, truncated_address
from quartstack.web.context import current_g, current_request
from quartstack.web.headers import optional_header
from quartstack.web.http_methods import bounded_method
from quartstack.web.request_ids import new_request_id
from quartstack.web.request_steps import request_steps

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ENDPOINT = "<unmatched>"
#: The matched route's template in the ASGI scope, for wrappers outside Quart (the
#: server span is named by it once the request is done); absent when nothing matched.
ROUTE_SCOPE_KEY = "quartstack.route"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

access_logger = logging.getLogger("quartstack.access")


@lru_cache(maxsize=512)
def route_template(rule: str) -> str:
    """``/examples/cache/<key>`` -> ``/examples/cache/{key}`` (OpenAPI style)."""
    return _CONVERTER.sub(r"{\1}", rule)


def current_endpoint() -> str:
    rule = current_request().url_rule
    return route_template(rule.rule) if rule is not None else UNMATCHED_ENDPOINT


def _incoming_request_id() -> tuple[str, Checked]:
    """The request id, and its form for log lines: a client's id that holds personal
    data (a card number is a valid id) is masked there; the response keeps it."""
    candidate = optional_header(REQUEST_ID_HEADER)
    if candidate and _VALID_REQUEST_ID.fullmatch(candidate):
        return candidate, checked(candidate)
    request_id = new_request_id()
    return request_id, Checked(request_id)


class RequestRecord:
    """What the hooks of one request share (kept in ``g.request_record``)."""

    __slots__ = ("endpoint", "in_progress", "method", "request_id", "started", "stats")

    def __init__(self, request_id: str, method: str, endpoint: str) -> None:
        self.request_id = request_id
        self.method = method
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.stats = HTTP_METRICS.route(bounded_method(method), endpoint)
        self.stats.in_progress += 1
        self.in_progress = True


@lru_cache(maxsize=1024)
def _checked(text: str) -> Checked:
    """Methods and route templates repeat: masked once each (bounded: a client picks
    the method)."""
    return checked(text)


@lru_cache(maxsize=4096)
def _checked_full_address(address: str) -> Checked:
    return checked(address)


@lru_cache(maxsize=4096)
def _checked_truncated_address(address: str) -> Checked:
    return checked(truncated_address(address))


#: ``LOG_CLIENT_IP`` -> the client address as access lines show it.
CLIENT_FOR_LOGS: dict[str, Callable[[str], Checked]] = {
    "full": _checked_full_address,
    "truncated": _checked_truncated_address,
}


def _start_request() -> RequestRecord:
    request_id, for_logs = _incoming_request_id()
    request = current_request()
    rule = request.url_rule
    if rule is not None:
        endpoint = route_template(rule.rule)
        cast(dict[str, Any], request.scope)[ROUTE_SCOPE_KEY] = endpoint
    else:
        endpoint = UNMATCHED_ENDPOINT
    record = RequestRecord(request_id, request.method, endpoint)
    g = current_g()
    g.request_record = record
    g.request_id = record.request_id
    request_id_var.set(for_logs)
    return record


def _record_of_request() -> RequestRecord:
    """This request's record; created late when a hook before ours failed."""
    record: RequestRecord | None = current_g().get("request_record")
    if record is None:
        record = _start_request()
    return record


class Observability:
    """Request ids, access lines and request metrics; its ``before_request`` runs first of
    the app's, so every error carries the id."""

    KEY = "quartstack.observability"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        client_for_logs = CLIENT_FOR_LOGS[self.settings.log_client_ip]

        def start_request() -> None:
            _start_request()

        def finish_request(response: Response) -> Response:
            record = _record_of_request()
            response.headers[REQUEST_ID_HEADER] = record.request_id
            duration = time.perf_counter() - record.started
            status = response.status_code
            # the trace id rides along as an exemplar (OpenMetrics scrapes only)
            exemplar = current_exemplar() if tracing_state.active else None
            HTTP_METRICS.finished(record.stats, status, duration, exemplar)
            if access_logger.isEnabledFor(logging.INFO):
                fields: dict[str, Any] = {
                    "method": _checked(record.method),
                    "route": _checked(record.endpoint),
                    "path": current_request().path,
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "client": client_for_logs(client_address()),
                }
                problem_kind = current_g().get("problem_kind")
                if problem_kind is not None:  # only error lines carry it (no null on the rest)
                    fields["error_type"] = problem_kind
                log_info(access_logger, "request", fields)
            return response

        def end_request(_exc: BaseException | None) -> None:
            record: RequestRecord | None = current_g().get("request_record")
            if record is not None and record.in_progress:
                record.in_progress = False
                record.stats.in_progress -= 1

        steps = request_steps(app)
        steps.before(start_request, first=True)
        steps.after(finish_request)
        steps.teardown(end_request)
