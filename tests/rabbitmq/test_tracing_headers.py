"""The trace context across messages, without a broker: what publish injects, what the
consumer continues, links to a stored cause, errors, and nothing without a trace."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from quartstack.integrations.rabbitmq import tracing_headers
from quartstack.resilience import BackendUnavailable
from tests.support.spans import named, spans  # noqa: F401  (fixture)

tracer = trace.get_tracer("tests")


def test_publish_injects_its_own_context_and_the_consumer_continues_it(spans):  # noqa: F811
    with (
        tracer.start_as_current_span("request") as request,
        tracing_headers.publishing("orders", "orders", "m-1", body_size=7) as headers,
    ):
        pass
    [publish] = named(spans, "orders publish")
    assert publish.kind == SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == request.get_span_context().span_id
    assert dict(publish.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "orders",
        "messaging.rabbitmq.destination.routing_key": "orders",
        "messaging.message.id": "m-1",
        "messaging.message.body.size": 7,
    }
    context = publish.context
    assert headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")

    # AMQP header values may arrive as bytes
    received = {k: v.encode() for k, v in headers.items()}
    with tracing_headers.processing("orders-q", received, message_id="m-1", exchange="ex"):
        inner = trace.get_current_span().get_span_context()
    [process] = named(spans, "orders-q process")
    assert process.kind == SpanKind.CONSUMER
    assert process.context.span_id == inner.span_id
    assert process.context.trace_id == context.trace_id
    assert process.parent is not None and process.parent.span_id == context.span_id
    assert [link.context.span_id for link in process.links] == [context.span_id]
    attributes = dict(process.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "ex"
    assert attributes["messaging.destination.subscription.name"] == "orders-q"


def test_a_message_without_context_is_processed_in_a_new_trace(spans):  # noqa: F811
    with (
        tracer.start_as_current_span("unrelated ambient span") as ambient,
        tracing_headers.processing("q", {"x-other": "1"}),
    ):
        pass
    [process] = named(spans, "q process")
    assert process.parent is None and not process.links
    assert process.context.trace_id != ambient.get_span_context().trace_id


def test_a_batch_message_links_to_its_stored_cause(spans):  # noqa: F811
    with tracer.start_as_current_span("request"):
        cause = tracing_headers.capture_context()
    assert cause is not None and set(cause) == {"traceparent"}
    request = named(spans, "request")[0].context

    class Outgoing:
        routing_key = "user.registered"
        body = b"{}"
        message_id = "e-1"
        caused_by = cause

    class Untraced(Outgoing):
        caused_by = None

    started, headers = tracing_headers.start_batch("events", [Outgoing(), Untraced()])
    tracing_headers.end_batch(started, [None, BackendUnavailable("rabbitmq", "down")])
    linked, failed = named(spans, "events publish")
    assert linked.parent is None  # the relay's own trace, not the finished request's
    assert linked.context.trace_id != request.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in linked.links] == [
        (request.trace_id, request.span_id)
    ]
    assert linked.status.status_code == StatusCode.UNSET
    assert not failed.links
    assert failed.status.status_code == StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "backend-unavailable"
    assert {h["traceparent"][36:52] for h in headers} == {
        f"{linked.context.span_id:016x}",
        f"{failed.context.span_id:016x}",
    }


def test_a_failed_publish_is_marked_with_the_error_kind_and_raises(spans):  # noqa: F811
    with pytest.raises(BackendUnavailable), tracing_headers.publishing("q", "q", "m"):
        raise BackendUnavailable("rabbitmq", "rabbitmq connection lost")
    [publish] = named(spans, "q publish")
    assert publish.status.status_code == StatusCode.ERROR
    assert publish.status.description == "backend-unavailable"


def test_no_context_is_captured_outside_a_trace(spans):  # noqa: F811
    assert tracing_headers.capture_context() is None


def test_nothing_is_traced_or_injected_while_tracing_is_off(spans, monkeypatch):  # noqa: F811
    monkeypatch.setattr("quartstack.tracing.state.active", False)
    with tracer.start_as_current_span("request"):
        assert tracing_headers.capture_context() is None
        with tracing_headers.publishing("q", "q", "m") as headers:
            assert headers == {}
        started, batch = tracing_headers.start_batch("ex", [])
        assert (started, batch) == ([], [])
        with tracing_headers.processing(
            "q", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        ):
            assert trace.get_current_span().get_span_context().trace_id != int("1" * 32, 16)
    assert [s.name for s in spans.get_finished_spans()] == ["request"]
