"""Log ids and exemplars follow the current span, through the one-span cache."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from quartstack.log_masking import Checked
from quartstack.tracing import logs
from quartstack.tracing.exemplars import current_exemplar
from quartstack.tracing.span_ids import current_ids


@contextmanager
def _current(span: trace.Span) -> Iterator[trace.Span]:
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        context.detach(token)


def _hex(span: trace.Span) -> tuple[str, str]:
    ids = span.get_span_context()
    return f"{ids.trace_id:032x}", f"{ids.span_id:016x}"


def test_outside_a_span_there_are_no_ids_and_no_exemplar() -> None:
    assert current_ids() is None
    assert logs._trace_id() is None and logs._span_id() is None
    assert current_exemplar() is None


def test_ids_follow_the_current_span_in_and_out_of_nested_spans() -> None:
    tracer = TracerProvider().get_tracer("ids")
    outer = tracer.start_span("outer")
    with _current(outer):
        trace_id, outer_id = _hex(outer)
        assert (logs._trace_id(), logs._span_id()) == (trace_id, outer_id)
        assert type(logs._trace_id()) is Checked  # the masking scan skips them
        assert current_ids() is current_ids()  # formatted once for the span
        assert current_exemplar() == {"trace_id": trace_id, "span_id": outer_id}
        inner = tracer.start_span("inner")
        with _current(inner):
            assert (logs._trace_id(), logs._span_id()) == _hex(inner)
            assert logs._trace_id() == trace_id  # a child: the same trace
        # Back in the outer span: its ids again, although the inner ones were the last.
        assert (logs._trace_id(), logs._span_id()) == (trace_id, outer_id)
        assert current_exemplar() == {"trace_id": trace_id, "span_id": outer_id}
    assert current_ids() is None


def test_an_unsampled_span_has_log_ids_and_no_exemplar() -> None:
    unsampled = NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    with _current(unsampled):
        assert (logs._trace_id(), logs._span_id()) == (f"{0xABC:032x}", f"{0xDEF:016x}")
        assert current_exemplar() is None
