"""The exemplar of a metric observation: the trace that produced it, so a latency spike
in Grafana links to its trace. Exemplars are exposed only in the OpenMetrics format."""

from __future__ import annotations

from opentelemetry import trace


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the current sampled span, or ``None``."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
