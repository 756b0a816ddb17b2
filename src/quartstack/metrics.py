"""Every Prometheus metric the service exports, in one place.

Metrics live in a dedicated registry rather than the global one so that the
names on ``/metrics`` are exactly the contract in API.md (plus the process
collector), and so that building several apps in one test process cannot
register a metric twice.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from quartstack.web.http_metrics import HttpMetrics

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --- HTTP ------------------------------------------------------------------------------
#: ``http_requests_total``, ``http_request_duration_seconds``, ``http_requests_in_progress``:
#: changed on every request, so kept without prometheus_client's locks (web/http_metrics.py).
HTTP_METRICS = HttpMetrics(_LATENCY_BUCKETS)
REGISTRY.register(HTTP_METRICS)
HTTP_ERRORS = Counter(
    "http_errors_total",
    "Problem responses sent, by problem kind and status.",
    ["error_type", "status_code"],
    registry=REGISTRY,
)

# --- response cache ----------------------------------------------------------------------
CACHE_HITS = Counter(
    "cache_hits_total",
    "Response cache hits, by tier (memory: this process; redis: the shared one).",
    ["endpoint", "tier"],
    registry=REGISTRY,
)
CACHE_MISSES = Counter(
    "cache_misses_total",
    "Response cache misses, by tier (a redis miss runs the route).",
    ["endpoint", "tier"],
    registry=REGISTRY,
)
CACHE_INVALIDATIONS = Counter(
    "cache_invalidations_total",
    "Response cache entries removed by pattern.",
    ["pattern"],
    registry=REGISTRY,
)

# --- circuit breakers ---------------------------------------------------------------------
CIRCUIT_STATE = Gauge(
    "circuit_breaker_state",
    "Circuit state per backend: 0 closed, 1 half-open, 2 open.",
    ["service"],
    registry=REGISTRY,
)
CIRCUIT_OPENED = Counter(
    "circuit_breaker_opened_total", "Transitions to open.", ["service"], registry=REGISTRY
)
CIRCUIT_HALF_OPENED = Counter(
    "circuit_breaker_half_open_total",
    "Transitions to half-open.",
    ["service"],
    registry=REGISTRY,
)
CIRCUIT_CLOSED = Counter(
    "circuit_breaker_closed_total",
    "Transitions back to closed.",
    ["service"],
    registry=REGISTRY,
)
CIRCUIT_FAILURES = Counter(
    "circuit_breaker_failures_total",
    "Backend calls that failed and counted against the circuit.",
    ["service"],
    registry=REGISTRY,
)

# --- rate limiting --------------------------------------------------------------------
RATE_LIMIT_HITS = Counter(
    "rate_limit_hits_total",
    "Requests refused with 429, by route template.",
    ["endpoint"],
    registry=REGISTRY,
)
RATE_LIMIT_STORE_ERRORS = Counter(
    "rate_limit_store_errors_total",
    "Rate-limit checks that could not reach Redis and failed open.",
    registry=REGISTRY,
)
IDEMPOTENCY_NOT_ENFORCED = Counter(
    "idempotency_not_enforced_total",
    "POSTs with an Idempotency-Key processed without the guarantee, by reason "
    "(redis_unavailable, unsupported_server, unreadable_record).",
    ["reason"],
    registry=REGISTRY,
)

# --- backends -----------------------------------------------------------------------------
BACKEND_CALL_DURATION = Histogram(
    "backend_call_duration_seconds",
    "Duration of calls to a backend, by operation (failures included).",
    ["service", "operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BACKEND_CALL_RETRIES = Counter(
    "backend_call_retries_total",
    "Idempotent backend reads retried after a connection error (RETRY_* settings).",
    ["service", "operation"],
    registry=REGISTRY,
)
BACKEND_POOL_CONNECTIONS = Gauge(
    "backend_pool_connections",
    "Connections in a backend pool, by state (in_use, idle, max).",
    ["service", "state"],
    registry=REGISTRY,
)
BACKEND_UP = Gauge(
    "backend_up",
    "1 if the backend's last health check or call succeeded; 0 if it failed or the circuit opened.",
    ["service"],
    registry=REGISTRY,
)
VAULT_LEASE_SECONDS_LEFT = Gauge(
    "vault_lease_seconds_remaining",
    "Seconds left on the current dynamic-credentials lease, per backend.",
    ["service"],
    registry=REGISTRY,
)
VAULT_LEASE_RENEWALS = Counter(
    "vault_lease_renewals_total",
    "Dynamic-credentials lease renewals, by backend and result (renewed, failed).",
    ["service", "result"],
    registry=REGISTRY,
)
VAULT_LEASE_ROTATIONS = Counter(
    "vault_lease_rotations_total",
    "Dynamic credentials replaced by new ones (pool rebuilt), by backend and result "
    "(rotated, failed).",
    ["service", "result"],
    registry=REGISTRY,
)
VAULT_TOKEN_RENEWALS = Counter(
    "vault_token_renewals_total",
    "Vault token renewals and re-logins, by result (renewed, relogin, failed).",
    ["result"],
    registry=REGISTRY,
)
MESSAGES_PUBLISHED = Counter(
    "messages_published_total",
    "Messages confirmed by the broker.",
    registry=REGISTRY,
)
MESSAGE_PUBLISH_FAILURES = Counter(
    "message_publish_failures_total",
    "Publishes not confirmed by the broker, by reason "
    "(nack, unroutable, unconfirmed, timeout, error).",
    ["reason"],
    registry=REGISTRY,
)

# --- service ---------------------------------------------------------------------------
APP_INFO = Gauge(
    "app_info",
    "Constant 1, labelled with name and version.",
    ["name", "version"],
    registry=REGISTRY,
)
READINESS = Gauge("app_ready", "1 while the readiness probe answers 200.", registry=REGISTRY)

# --- signup outbox relay ------------------------------------------------------------------
OUTBOX_PENDING = Gauge(
    "outbox_events_pending",
    "Outbox rows not yet published (the relay's count, at most 1 s old).",
    registry=REGISTRY,
)
OUTBOX_PUBLISH_LAG = Histogram(
    "outbox_publish_lag_seconds",
    "Time from an event's insert to its confirm by the broker (observed once marked).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
OUTBOX_RELAY_BATCHES = Counter(
    "outbox_relay_batches_total", "Relay batches completed.", registry=REGISTRY
)
OUTBOX_RELAY_FAILURES = Counter(
    "outbox_relay_failures_total",
    "Relay failures (a batch, or one event not confirmed), by problem kind.",
    ["reason"],
    registry=REGISTRY,
)
