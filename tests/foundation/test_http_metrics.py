"""HttpMetrics writes what prometheus_client's Counter, Histogram and Gauge write for the
same requests, in both exposition formats, exemplars included."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from quartstack.metrics import _LATENCY_BUCKETS, REGISTRY
from quartstack.web.http_metrics import HttpMetrics

#: (method, endpoint, status, seconds, exemplar): bucket bounds exactly, between, above all.
REQUESTS = [
    ("GET", "/health/", 200, 0.0004, None),
    ("GET", "/health/", 200, 0.001, None),  # on a bound: counted in that bucket
    ("GET", "/health/", 503, 0.0011, {"trace_id": "a" * 32, "span_id": "b" * 16}),
    ("POST", "/users", 201, 0.25, {"trace_id": "c" * 32, "span_id": "d" * 16}),
    ("POST", "/users", 201, 0.3, None),
    ("GET", "<unmatched>", 404, 12.0, None),  # above the last bound: +Inf only
]


def _library_metrics() -> tuple[CollectorRegistry, Gauge, Counter, Histogram]:
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total",
        "HTTP requests answered, by route template and status.",
        ["method", "endpoint", "status"],
        registry=registry,
    )
    durations = Histogram(
        "http_request_duration_seconds",
        "Time from request received to response ready, by route template.",
        ["method", "endpoint"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    in_progress = Gauge(
        "http_requests_in_progress",
        "Requests being handled now, by route template.",
        ["method", "endpoint"],
        registry=registry,
    )
    return registry, in_progress, requests, durations


def _lines(text: bytes) -> list[str]:
    """Exposition lines, sorted, with the ``_created`` timestamps and exemplar times out."""
    masked = re.sub(rb"(_created\{[^}]*\}) \S+", rb"\1 <time>", text)
    masked = re.sub(rb"(# \{[^}]*\} \S+) \S+", rb"\1 <time>", masked)
    return sorted(masked.decode().splitlines())


@pytest.fixture
def both() -> tuple[CollectorRegistry, CollectorRegistry]:
    ours = HttpMetrics(_LATENCY_BUCKETS)
    our_registry = CollectorRegistry()
    our_registry.register(ours)
    registry, in_progress, requests, durations = _library_metrics()
    for method, endpoint, status, seconds, exemplar in REQUESTS:
        stats = ours.route(method, endpoint)
        stats.in_progress += 1
        in_progress.labels(method, endpoint).inc()
        ours.finished(stats, status, seconds, exemplar)
        requests.labels(method, endpoint, str(status)).inc()
        durations.labels(method, endpoint).observe(seconds, exemplar)
        stats.in_progress -= 1
        in_progress.labels(method, endpoint).dec()
    still_running = ours.route("GET", "/health/")
    still_running.in_progress += 1
    in_progress.labels("GET", "/health/").inc()
    return our_registry, registry


def test_the_text_format_is_prometheus_clients(both):
    ours, library = both
    assert _lines(generate_latest(ours)) == _lines(generate_latest(library))


def test_openmetrics_with_exemplars_is_prometheus_clients(both):
    ours, library = both
    text = generate_openmetrics(ours)
    assert _lines(text) == _lines(generate_openmetrics(library))
    # the exemplar sits on the bucket of its observation
    assert re.search(
        rb'http_request_duration_seconds_bucket\{endpoint="/users",le="0.25",method="POST"\} '
        rb'1.0 # \{span_id="d{16}",trace_id="c{32}"\} 0.25 ',
        text,
    )


def test_the_service_registry_exposes_them_once():
    text = generate_latest(REGISTRY).decode()
    for name in (
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_progress",
    ):
        assert text.count(f"# TYPE {name} ") == 1
