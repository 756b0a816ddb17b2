"""FastTracerProvider's spans reach processors and exporters as the SDK's own spans do.

Each scenario runs the same API calls through the SDK's ``TracerProvider`` and through
``FastTracerProvider``, with the same ids and explicit timestamps, and compares what an
exporter receives: every field of the finished spans, and the OTLP bytes the official
encoder makes of them (and ours, which reads the fast spans' fields directly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    ParentBased,
    Sampler,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from quartstack.tracing import otlp_encoding
from quartstack.tracing.fast_spans import (
    FastSpan,
    FastTracerProvider,
    SharedAttributes,
    shared_attributes,
)
from quartstack.tracing.otlp_encoding import encode_spans

Scenario = Callable[[trace.TracerProvider], None]


class _Counting(IdGenerator):
    """The same ids, in the same order, for both providers."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return 0x1000 + self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return 0xABC000 + self.next


def _run(factory: type[TracerProvider], scenario: Scenario, **options: Any) -> list[ReadableSpan]:
    kept = InMemorySpanExporter()
    provider = factory(
        resource=Resource.create({"service.name": "compare"}),
        id_generator=_Counting(),
        shutdown_on_exit=False,
        **options,
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    scenario(provider)
    return list(kept.get_finished_spans())


def _fields(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


def _same(scenario: Scenario, **options: Any) -> list[ReadableSpan]:
    """Both providers' spans, field by field and as OTLP bytes; the fast ones."""
    sdk = _run(TracerProvider, scenario, **options)
    fast = _run(FastTracerProvider, scenario, **options)
    assert [_fields(s) for s in fast] == [_fields(s) for s in sdk]
    expected = official(sdk).SerializeToString()
    assert official(fast).SerializeToString() == expected
    # Processors get the fast spans themselves; our encoding reads their fields: the
    # same bytes.
    assert all(type(span) is FastSpan for span in fast)
    assert encode_spans(fast).SerializeToString() == expected
    return fast


REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1")]),
)


def _everything(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("quartstack.http", "1.2", schema_url="https://scope/1")
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    server = tracer.start_span(
        "GET",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "GET", "server.port": 8000, "ratio": 0.5},
        links=[
            Link(REMOTE, {"why": "retry"}),
            Link(SpanContext(0, 0, is_remote=False)),  # invalid, no attributes: not kept
        ],
        start_time=1_000,
    )
    server.set_attribute("flag", True)
    server.set_attribute("http.request.method", "HEAD")  # a replaced pair moves to the end
    server.set_attribute("tags", ["a", "b"])
    server.set_attribute("mixed", ["a", 1])  # not homogeneous: as the SDK's version does
    server.set_attribute("nested", {"a": 1})  # a map: kept or dropped by the SDK's version
    server.set_attribute("", "no key")  # dropped
    server.set_attributes({"http.route": "/items/{id}", "http.response.status_code": 200})
    server.add_event("cache.miss", {"key.kind": "user"}, timestamp=1_500)
    server.add_link(SpanContext(0xF00, 0xBA2, is_remote=False), {"cause": "batch"})
    server.update_name("GET /items/{id}")
    with trace.use_span(server, end_on_exit=False):
        client = tracer.start_span("SELECT shop", kind=SpanKind.CLIENT, start_time=2_000)
        client.set_status(Status(StatusCode.ERROR, "refused"))
        client.set_status(StatusCode.UNSET)  # ignored
        client.record_exception(ValueError("bad row"), {"row": 3}, timestamp=2_500)
        client.end(end_time=3_000)
    server.set_status(StatusCode.OK)
    server.set_status(StatusCode.ERROR, "after OK")  # ignored: OK is final
    server.end(end_time=9_000)
    server.set_attribute("late", 1)  # ignored: ended
    server.end(end_time=10_000)  # ignored: ended


def test_every_field_as_the_sdk_spans() -> None:
    spans = _same(_everything)
    assert [s.name for s in spans] == ["SELECT shop", "GET /items/{id}"]
    assert spans[1].parent == REMOTE
    assert spans[0].parent == spans[1].context


def _over_the_limits(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("limits")
    span = tracer.start_span(
        "limited",
        attributes={"a": "long value", "b": 2, "c": 3},
        links=[Link(REMOTE), Link(REMOTE, {"n": 2})],
        start_time=1,
    )
    span.set_attribute("a", "replaced, still cut")  # an existing key never counts as dropped
    span.set_attribute("d", 4)
    for n in range(3):
        span.add_event(f"event {n}", {"x": "abcdefgh", "y": 1, "z": 2}, timestamp=10 + n)
    span.end(end_time=100)


def test_limits_drop_and_count_as_the_sdk() -> None:
    limits = SpanLimits(
        max_span_attributes=2,
        max_events=2,
        max_links=1,
        max_event_attributes=2,
        max_link_attributes=1,
        max_attribute_length=4,
        max_span_attribute_length=5,
    )
    (span,) = _same(_over_the_limits, span_limits=limits)
    # The oldest pairs make room for new ones; every eviction counts.
    assert span.attributes == {"a": "repla", "d": 4}
    assert span.dropped_attributes == 3
    assert [e.name for e in span.events] == ["event 1", "event 2"]
    assert span.dropped_events == 1
    assert [dict(link.attributes or {}) for link in span.links] == [{"n": 2}]
    assert span.dropped_links == 1


def _long_values(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("lengths")
    first = tracer.start_span("at start", attributes={"short": "abc", "long": "abcdef"})
    first.end()
    second = tracer.start_span("set later", attributes={"n": 12345678})
    second.set_attribute("fits", "xyz")
    second.set_attribute("later", "xyz12")
    second.end()


def test_long_strings_are_cut_as_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("quartstack.tracing.fast_spans.time_ns", lambda: 7)
    monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", lambda: 7)
    first, second = _same(_long_values, span_limits=SpanLimits(max_span_attribute_length=3))
    assert first.attributes == {"short": "abc", "long": "abc"}
    assert second.attributes == {"n": 12345678, "fits": "xyz", "later": "xyz"}


def _current_span_and_exception(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("current")
    with pytest.raises(KeyError), tracer.start_as_current_span("outer", start_time=5) as outer:
        assert trace.get_current_span() is outer
        with tracer.start_as_current_span(
            "quiet", record_exception=False, set_status_on_exception=False, start_time=6
        ):
            pass
        raise KeyError("missing")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_start_as_current_span_records_an_escaping_exception() -> None:
    sdk = _run(TracerProvider, _current_span_and_exception)
    fast = _run(FastTracerProvider, _current_span_and_exception)
    # End times come from the clock here: compare all else.
    assert [(s.name, s.parent, s.status.status_code, s.status.description) for s in fast] == [
        (s.name, s.parent, s.status.status_code, s.status.description) for s in sdk
    ]
    (event,) = fast[1].events
    (expected,) = sdk[1].events
    assert event.name == expected.name == "exception"
    assert event.attributes is not None and expected.attributes is not None
    for key in ("exception.type", "exception.message", "exception.escaped"):
        assert event.attributes[key] == expected.attributes[key]
    assert event.attributes["exception.type"] == "KeyError"
    stack = str(event.attributes["exception.stacktrace"])
    assert "in _current_span_and_exception" in stack
    assert stack.endswith("KeyError: 'missing'\n")
    assert not fast[0].events


async def test_decorating_a_coroutine_function_spans_its_whole_run() -> None:
    kept = InMemorySpanExporter()
    provider = FastTracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("decorated")

    @tracer.start_as_current_span("work")
    async def work() -> str:
        await asyncio.sleep(0)
        return trace.get_current_span().get_span_context().span_id.to_bytes(8, "big").hex()

    inner_id = await work()
    (span,) = kept.get_finished_spans()
    assert span.name == "work"
    assert span.context.span_id.to_bytes(8, "big").hex() == inner_id


def _sampled_out(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("sampling")
    dropped = tracer.start_span("dropped")
    assert not dropped.is_recording()
    assert not dropped.get_span_context().trace_flags.sampled
    with trace.use_span(dropped, end_on_exit=True):
        child = tracer.start_span("child of dropped")
        assert not child.is_recording()
        child.end()
    remote_sampled = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    kept = tracer.start_span("child of a sampled remote", context=remote_sampled, start_time=1)
    kept.end(end_time=2)


@pytest.mark.parametrize(
    "sampler", [ParentBased(ALWAYS_OFF), ALWAYS_OFF], ids=["parentbased_always_off", "always_off"]
)
def test_the_sampler_decides_as_in_the_sdk(sampler: Sampler) -> None:
    spans = _same(_sampled_out, sampler=sampler)
    expected = ["child of a sampled remote"] if isinstance(sampler, ParentBased) else []
    assert [s.name for s in spans] == expected


def _under_every_parent(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("parents")
    local_sampled = SpanContext(0xA1, 0xB1, is_remote=False, trace_flags=TraceFlags(1))
    local_unsampled = SpanContext(0xA2, 0xB2, is_remote=False, trace_flags=TraceFlags(0))
    remote_unsampled = SpanContext(
        0xA3, 0xB3, is_remote=True, trace_flags=TraceFlags(0), trace_state=TraceState([("k", "v")])
    )
    parents = {"root": None, "local sampled": local_sampled, "remote sampled": REMOTE}
    parents |= {"local unsampled": local_unsampled, "remote unsampled": remote_unsampled}
    for n, (label, parent) in enumerate(parents.items()):
        context = (
            None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
        )
        span = tracer.start_span(label, context=context, attributes={"n": n}, start_time=n)
        _SEEN.append((label, span.is_recording(), span.get_span_context()))
        span.end(end_time=n + 1)


_SEEN: list[tuple[str, bool, SpanContext]] = []


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, DEFAULT_ON, ParentBased(ALWAYS_ON)],
    ids=["always_on", "parentbased_always_on", "an_equal_parentbased_of_our_own"],
)
def test_the_samplers_decided_without_a_sampling_result_decide_as_the_sdk(
    sampler: Sampler,
) -> None:
    _SEEN.clear()
    sdk = _run(TracerProvider, _under_every_parent, sampler=sampler)
    sdk_seen = list(_SEEN)
    _SEEN.clear()
    fast = _same(_under_every_parent, sampler=sampler)
    assert _SEEN[-5:] == sdk_seen  # recording or not, ids, flags and trace state
    assert [s.name for s in fast] == [s.name for s in sdk]
    assert len(fast) == (5 if sampler is ALWAYS_ON else 3)


def test_a_fast_span_is_what_the_tracer_starts_and_a_processor_sees_a_readable_span() -> None:
    kept = InMemorySpanExporter()
    provider = FastTracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(kept))
    span = provider.get_tracer("kind").start_span("one")
    assert isinstance(span, FastSpan)
    token = context.attach(trace.set_span_in_context(span))
    try:
        assert trace.get_current_span() is span
    finally:
        context.detach(token)
    span.end()
    (finished,) = kept.get_finished_spans()
    assert finished is span  # no copy: nothing changes once it has ended
    assert isinstance(finished, ReadableSpan)
    span.set_attribute("late", 1)
    span.update_name("renamed")
    assert (finished.name, dict(finished.attributes or {})) == ("one", {})


SHARED = SharedAttributes(
    {"db.system.name": "postgresql", "db.namespace": "shop", "server.port": 5432}
)


def _shared(provider: trace.TracerProvider) -> None:
    tracer = provider.get_tracer("quartstack.backends")
    for n, start in enumerate((1_000, 2_000)):
        span = tracer.start_span(
            "query shop", kind=SpanKind.CLIENT, attributes=SHARED, start_time=start
        )
        if n:
            span.set_attribute("error.type", "TimeoutError")
            span.set_attribute("db.namespace", "other")  # a replaced pair moves to the end
        span.end(end_time=start + 500)


def test_shared_attributes_are_kept_by_reference_until_a_span_changes_them() -> None:
    first, second = _same(_shared)
    assert first._attributes is SHARED  # neither checked nor copied per span
    assert second._attributes is not SHARED
    assert dict(second.attributes or {}) == {
        "db.system.name": "postgresql",
        "server.port": 5432,
        "error.type": "TimeoutError",
        "db.namespace": "other",
    }
    assert dict(SHARED) == {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "server.port": 5432,
    }
    # The encoding of the shared block is kept, and stays the official encoder's.
    assert encode_spans([first]).SerializeToString() == official([first]).SerializeToString()
    assert otlp_encoding._shared[b"\x4a"][id(SHARED)][0] is SHARED


def test_shared_attributes_over_a_limit_are_cut_and_counted_as_by_the_sdk() -> None:
    first, _ = _same(_shared, span_limits=SpanLimits(max_span_attribute_length=4))
    assert first.attributes == {
        "db.system.name": "post",
        "db.namespace": "shop",
        "server.port": 5432,
    }
    (crowded, _) = _same(_shared, span_limits=SpanLimits(max_span_attributes=2))
    assert crowded.dropped_attributes == 1


def test_shared_attributes_are_read_only_and_only_plain() -> None:
    with pytest.raises(TypeError):
        SHARED["db.namespace"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        SHARED.update({"a": 1})
    with pytest.raises(TypeError):
        del SHARED["db.namespace"]  # type: ignore[attr-defined]
    assert type(shared_attributes({"a": 1, "b": "x"})) is SharedAttributes
    for unfit in ({"tags": ["a"]}, {"": 1}, {"none": None}):
        kept = shared_attributes(unfit)
        assert type(kept) is dict  # checked per span by the tracer, as any attributes
        assert kept == unfit


def test_a_disabled_sdk_gives_the_no_op_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = FastTracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("off").start_span("nothing")
    assert not span.is_recording()


@pytest.fixture(autouse=True)
def _no_current_span() -> Iterator[None]:
    assert trace.get_current_span() is trace.INVALID_SPAN
    yield
