"""The fast OTLP encoding writes the official encoder's bytes, for spans with every field
set, and the OTLP/HTTP exporter uses it (the receiver tests in test_traces.py decode its
output with the official classes end to end)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official
from opentelemetry.exporter.otlp.proto.http import trace_exporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from quartstack.tracing import otlp_encoding
from quartstack.tracing.otlp_encoding import encode_spans
from tests.support.otlp import OtlpReceiver


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _provider(resource: Resource) -> tuple[TracerProvider, _Keep]:
    kept = _Keep()
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider, kept


def _every_shape() -> list[ReadableSpan]:
    resource = Resource.create({"service.name": "shop", "n": 3}, schema_url="https://s/1")
    provider, kept = _provider(resource)
    http = provider.get_tracer("quartstack.http", "1.2", schema_url="https://scope/1")
    backends = provider.get_tracer("quartstack.backends")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "o1")]),
    )
    server = http.start_span(
        "GET /items/{id}",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "server.port": 8000,
            "neg": -5,
            "big": 2**63 - 1,
            "ratio": 0.25,
            "flag": False,
            "on": True,
            "empty": "",
            "uni": "grüße ✓",
            "raw": b"\x00\xff",
            "tags": ["a", "b"],
            "numbers": (1, 2, 3),
            "floats": [1.5, -0.0],
            "bools": [True, False],
        },
    )
    server.add_event("retry", {"attempt": 2, "why": "timeout"})
    server.add_event("")
    server.set_status(Status(StatusCode.ERROR, "boom"))
    with trace.use_span(server):
        client = backends.start_span(
            "query orders",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql"},
            links=[Link(remote, {"messaging.operation.name": "publish"}), Link(remote)],
        )
        client.set_status(Status(StatusCode.OK))
        client.end()
    server.end()
    for kind in (SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER):
        backends.start_span("", kind=kind).end()
    other, more = _provider(Resource.create({"service.name": "worker"}))
    other.get_tracer("quartstack.worker").start_span("consume").end()
    return [*kept.spans, *more.spans]


def test_the_same_bytes_as_the_official_encoder():
    spans = _every_shape()
    ours = encode_spans(spans).SerializePartialToString()
    theirs = official(spans).SerializePartialToString()
    assert ours == theirs
    decoded = ExportTraceServiceRequest.FromString(ours)
    assert len(decoded.resource_spans) == 2
    scopes = decoded.resource_spans[0].scope_spans
    assert [len(s.spans) for s in scopes] == [4, 1]  # the client span ended first


def test_repeated_encodings_reuse_cached_pairs_and_stay_equal():
    spans = _every_shape()
    first = encode_spans(spans).SerializeToString()
    assert otlp_encoding._pairs  # the attribute pairs were kept
    assert encode_spans(spans).SerializeToString() == first


def test_a_full_pair_cache_starts_over(monkeypatch):
    monkeypatch.setattr(otlp_encoding, "_PAIR_CACHE_SIZE", 2)
    monkeypatch.setattr(otlp_encoding, "_pairs", {})
    spans = _every_shape()
    assert encode_spans(spans).SerializeToString() == official(spans).SerializeToString()
    assert otlp_encoding._pairs
    assert all(len(cache) <= 2 for cache in otlp_encoding._pairs.values())


def test_equal_values_of_other_types_are_not_taken_from_the_pair_cache(monkeypatch):
    """``True == 1`` and ``0.0 == -0.0``: a pair kept encoded for one must not stand in
    for the other, in any order."""
    monkeypatch.setattr(otlp_encoding, "_pairs", {})
    provider, kept = _provider(Resource.create({"service.name": "x"}))
    tracer = provider.get_tracer("t")
    for value in (True, 1, False, 0, 0.0, -0.0, 1.0, True):
        tracer.start_span("s", attributes={"v": value}).end()
    for span in kept.spans:  # one at a time: each against the cache the others left
        assert encode_spans([span]).SerializeToString() == official([span]).SerializeToString()
    everything = kept.spans
    assert encode_spans(everything).SerializeToString() == official(everything).SerializeToString()


def test_scopes_are_grouped_by_object_and_empty_scope_is_encoded():
    resource = Resource.create({"service.name": "x"})
    provider, kept = _provider(resource)
    provider.get_tracer("a").start_span("one").end()
    span = kept.spans[0]
    bare = ReadableSpan(
        name="bare",
        context=span.get_span_context(),
        resource=resource,
        instrumentation_scope=None,
        start_time=1,
        end_time=2,
    )
    scoped = ReadableSpan(
        name="scoped",
        context=span.get_span_context(),
        resource=resource,
        instrumentation_scope=InstrumentationScope("b", None),
        attributes={"k": "v"},
        status=Status(StatusCode.UNSET),
    )
    batch = [span, bare, scoped]
    assert encode_spans(batch).SerializeToString() == official(batch).SerializeToString()


def test_an_unencodable_value_is_left_out():
    class Odd:
        pass

    resource = Resource.create({"service.name": "x"})
    provider, kept = _provider(resource)
    provider.get_tracer("a").start_span("s", attributes={"fine": 1}).end()
    span = kept.spans[0]
    odd = ReadableSpan(
        name="odd",
        context=span.get_span_context(),
        resource=resource,
        attributes={"fine": 1, "odd": Odd()},  # the SDK's checks were bypassed
    )
    decoded = ExportTraceServiceRequest.FromString(encode_spans([odd]).SerializeToString())
    pairs = decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [pair.key for pair in pairs] == ["fine"]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**35, -1, -(2**63)])
def test_varints_match_protobuf(value):
    resource = Resource.create({"service.name": "x"})
    provider, kept = _provider(resource)
    provider.get_tracer("a").start_span("s", attributes={"v": value}).end()
    assert encode_spans(kept.spans).SerializeToString() == official(kept.spans).SerializeToString()


def test_install_points_the_http_exporter_at_the_fast_encoding(monkeypatch):
    monkeypatch.setattr(trace_exporter, "encode_spans", official)
    assert otlp_encoding.install() is True
    assert trace_exporter.encode_spans is encode_spans
    assert otlp_encoding.install() is True  # idempotent


def test_install_leaves_an_exporter_it_does_not_recognise(monkeypatch):
    def theirs(spans):  # a future exporter's own encoder
        return official(spans)

    monkeypatch.setattr(trace_exporter, "encode_spans", theirs)
    assert otlp_encoding.install() is False
    assert trace_exporter.encode_spans is theirs


@pytest.mark.parametrize("keep", [True, False])
def test_the_benchs_counting_receiver_counts_what_the_exporter_sent(keep):
    """bench.tracing's receiver (``keep=False``) counts the spans of each export without
    keeping them; the tests' receiver keeps them. Both see every span sent."""
    spans = _every_shape()
    with OtlpReceiver(keep=keep) as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.traces_endpoint)
        try:
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert exporter.export(spans[:1]) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert receiver.span_count == len(spans) + 1
        assert len(receiver.spans) == (len(spans) + 1 if keep else 0)
