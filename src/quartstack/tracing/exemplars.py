"""The exemplar of a metric observation: the trace that produced it, so a latency spike
in Grafana links to its trace. Exemplars are exposed only in the OpenMetrics format."""

from __future__ import annotations

from quartstack.tracing.span_ids import current_ids


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the current sampled span, or ``None`` (shared by
    the span's observations: read, never changed)."""
    ids = current_ids()
    return None if ids is None else ids.exemplar
