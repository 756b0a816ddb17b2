"""OpenTelemetry tracing: configured from the standard ``OTEL_*`` variables, off (no SDK,
no per-request work beyond one flag check) unless an OTLP endpoint is set.

* :mod:`.setup` builds the SDK tracer provider once per process (``quartstack serve``,
  ``quartstack worker``, the ``quartstack.asgi`` entry point) and flushes it at shutdown;
* :mod:`.server` opens one server span per HTTP request;
* :mod:`.client` opens one client span per backend call (from the backend guard);
* :mod:`.logs` puts ``trace_id``/``span_id`` on every log line emitted inside a span.
"""

from quartstack.tracing.setup import (
    TRACER_NAME,
    configure_tracing,
    flush_tracing,
    shutdown_tracing,
    tracing_enabled,
)

__all__ = [
    "TRACER_NAME",
    "configure_tracing",
    "flush_tracing",
    "shutdown_tracing",
    "tracing_enabled",
]
