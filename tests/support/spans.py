"""Spans recorded in the test process: an SDK tracer provider with an in-memory
exporter, installed once (the global provider can be set only once per process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from quartstack.tracing import state

_EXPORTER = InMemorySpanExporter()


def _installed() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_quartstack_test_exporter", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._quartstack_test_exporter = True  # type: ignore[attr-defined]
    return _EXPORTER


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The spans ended during the test (earlier ones cleared), with tracing on (the flag
    ``quartstack.tracing.configure_tracing`` sets) for the test only."""
    exporter = _installed()
    monkeypatch.setattr(state, "active", True)
    exporter.clear()
    yield exporter
    exporter.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]
