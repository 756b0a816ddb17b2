"""The worker's metrics, in the service's registry (``quartstack.metrics.REGISTRY``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from quartstack.metrics import REGISTRY

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

EVENTS_CONSUMED = Counter(
    "worker_events_consumed_total",
    "Events taken from the queue, by type and result (applied, dead_lettered, requeued).",
    ["type", "result"],
    registry=REGISTRY,
)
EVENT_DURATION = Histogram(
    "worker_event_duration_seconds",
    "Time from delivery to ack (or dead-lettering) of one event, outage retries included.",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REDELIVERIES = Counter(
    "worker_redeliveries_total",
    "Deliveries flagged as redelivered by the broker (an earlier attempt was not acked).",
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "worker_dead_lettered_total",
    "Messages the worker sent to the dead-letter queue, by kind (invalid, failing).",
    ["kind"],
    registry=REGISTRY,
)
OUTAGE_RETRIES = Counter(
    "worker_outage_retries_total",
    "Retries of an event held while a projection backend was unavailable.",
    registry=REGISTRY,
)
PROJECTION_LAG = Histogram(
    "worker_projection_lag_seconds",
    "Time from the event's occurrence (the write's commit) to its projection.",
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
CONSUMING = Gauge(
    "worker_consuming",
    "1 while this worker has an active consumer on its queue.",
    registry=REGISTRY,
)
DEAD_LETTER_QUEUE_DEPTH = Gauge(
    "worker_dead_letter_queue_messages",
    "Messages waiting in the worker's dead-letter queue (read every 15 s; -1 unknown).",
    registry=REGISTRY,
)
