"""Lighter spans for the SDK's pipeline: the same sampler, ids, resource, limits,
processors and exporter, with span objects that cost a fraction of the SDK's.

Why: at 100 % sampling the SDK's span was most of tracing's cost on a backend route
(measured with callgrind on ``/examples/database/postgres/query``: the SDK's start and
end of two spans, a lock each, attributes validated one by one through
``BoundedAttributes`` and a ``ReadableSpan`` copy at the end, about 330k instructions
a request, a third of the untraced route). Everything around the span object stays the
SDK's: :class:`FastTracerProvider` is its ``TracerProvider`` (sampler and limits from
``OTEL_*``, ``add_span_processor``, ``force_flush``, ``shutdown``), and a span is
the SDK's own ``ReadableSpan`` (a subclass) that processors and exporters receive when
it ends, so an exporter, a ``BatchSpanProcessor`` or a user's processor sees nothing
different.

What differs from the SDK's span: no lock (spans here live on one event loop; the GIL
makes each dict update atomic); attribute values of the plain types (``str``, ``bool``,
``int``, ``float``) are kept in a plain dict as they are, and the first pair that needs
more switches the span to the SDK's own ``BoundedAttributes``; attributes many spans
start with (:class:`SharedAttributes`, a backend's per operation) are checked once and
kept by reference until a span changes them; the SDK's ``always_on`` and
``parentbased_always_on`` samplers, whose answer for a root or a sampled parent is
fixed, are not asked for it; no ``ReadableSpan`` copy is made at the end. The
semantics are the SDK's: the sampler decides (a dropped span is the API's
``NonRecordingSpan``), limits count what they drop, an OK status is final, nothing
changes once a span has ended. ``tests/tracing/test_fast_spans.py`` compares both.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from time import time_ns
from types import TracebackType
from typing import Any, NoReturn

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

try:  # the API's own: decorates async functions too (``@tracer.start_as_current_span``)
    from opentelemetry.util._decorator import _agnosticcontextmanager as _span_manager
except ImportError:  # pragma: no cover (an older API: sync functions only)
    _span_manager = contextmanager  # type: ignore[assignment]

logger = logging.getLogger("quartstack.tracing")

_PLAIN = frozenset({str, bool, int, float})
_UNSET = Status(StatusCode.UNSET)
#: W3C Trace Context level 2's "random trace id" flag (API 1.40+); 0 before it existed.
_RANDOM = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (_RANDOM if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


def _plain(key: Any, value: Any, max_length: int | None) -> bool:
    """A pair the SDK would store unchanged: a non-empty ``str`` key and a plain value
    (a string no longer than the limit)."""
    if type(key) is not str or not key or type(value) not in _PLAIN:
        return False
    return max_length is None or type(value) is not str or len(value) <= max_length


class SharedAttributes(dict[str, Any]):
    """Attributes many spans start with (a backend's, per operation), checked once:
    every key a non-empty ``str``, every value a plain type. Read-only. A span given
    these keeps them by reference until its first change of its own (a copy then), and
    the OTLP encoding keeps their encoded form: no per-span check, copy or encoding."""

    __slots__ = ("longest",)

    def __init__(self, attributes: Mapping[str, Any]) -> None:
        super().__init__(attributes)
        if not all(_plain(key, value, None) for key, value in self.items()):
            raise ValueError("shared attributes take non-empty str keys and plain values")
        #: The longest string value (checked against ``max_span_attribute_length``).
        self.longest = max((len(v) for v in self.values() if type(v) is str), default=0)

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("SharedAttributes are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


def shared_attributes(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attributes`` as :class:`SharedAttributes` when they qualify, else a plain copy
    (the tracer then checks them per span, as any attributes)."""
    try:
        return SharedAttributes(attributes)
    except ValueError:
        return dict(attributes)


class FastSpan(trace.Span, ReadableSpan):
    """A recording span (see the module docstring for how it differs from the SDK's).

    Attributes are a plain dict while every pair is plain and within the count limit;
    the first pair that is not turns them into the SDK's ``BoundedAttributes`` for the
    rest of the span, so validation, truncation, eviction and the dropped count are the
    SDK's own. Events and links use the SDK's containers (they are rare).

    It is also the SDK's ``ReadableSpan`` (as the SDK's own span is) that processors
    receive when it ends: nothing changes once it has ended, so it needs no copy."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_instrumentation_scope",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_record_exception",
        "_resource",
        "_set_status_on_exception",
        "_start_time",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any] | SharedAttributes | BoundedAttributes,
        links: Sequence[Link],
        tracer: FastTracer,
        start_time: int,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._name = name
        self._context: SpanContext = context
        self._parent = parent
        self._kind = kind
        self._attributes: dict[str, Any] | SharedAttributes | BoundedAttributes = attributes
        self._links = links
        self._events: BoundedList[Event] | tuple[()] = ()
        self._status = _UNSET
        self._start_time = start_time
        self._end_time: int | None = None
        self._tracer = tracer  # limits and processor: the tracer's
        self._resource = tracer.resource  # read by ReadableSpan's properties
        self._instrumentation_scope = tracer.scope
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    _instrumentation_info = None  # what ReadableSpan reads for the deprecated property

    # --- the API -----------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        self._set(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            logger.warning("Setting attribute on ended span.")
            return
        for key, value in attributes.items():
            self._set(key, value)

    def _set(self, key: str, value: Any) -> None:
        attributes = self._attributes
        if type(attributes) is SharedAttributes:  # the span's own copy from now on
            attributes = self._attributes = dict(attributes)
        if type(attributes) is dict:
            limits = self._tracer.limits
            room = limits.max_span_attributes
            if _plain(key, value, limits.max_span_attribute_length) and (
                room is None or key in attributes or len(attributes) < room
            ):
                if key in attributes:  # a replaced key moves to the end, as in the SDK
                    del attributes[key]
                attributes[key] = value
                return
            attributes = self._attributes = _bounded(attributes, limits)
        attributes[key] = value

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        if self._end_time is not None:
            logger.warning("Calling add_event() on an ended span.")
            return
        limits = self._tracer.limits
        if type(self._events) is not BoundedList:
            self._events = BoundedList(limits.max_events)
        bounded = BoundedAttributes(
            limits.max_event_attributes,
            attributes,
            max_value_len=limits.max_attribute_length,
            immutable=True,
        )
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling add_link() on an ended span.")
            return
        if not _kept_link(context, attributes):
            return
        links = self._links
        if not isinstance(links, BoundedList):
            links = self._links = BoundedList.from_seq(self._tracer.limits.max_links, links)
        links.append(Link(context, _link_attributes(attributes, self._tracer.limits)))

    def update_name(self, name: str) -> None:
        if self._end_time is not None:
            logger.warning("Calling update_name() on an ended span.")
            return
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling set_status() on an ended span.")
            return
        if self._status.status_code is StatusCode.OK:
            return  # final
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the SDK's attributes (type, message, stack)."""
        kind = type(exception)
        module = kind.__module__
        qualname = kind.__qualname__
        named = f"{module}.{qualname}" if module and module != "builtins" else qualname
        event: dict[str, Any] = {
            "exception.type": named,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            logger.warning("Calling end() on an ended span.")
            return
        self._end_time = time_ns() if end_time is None else end_time
        self._tracer.processor.on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """As the SDK's span: an exception leaving the block is recorded (if asked) and
        sets an error status (if asked); the span ends."""
        if exc_val is not None and self._end_time is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def __repr__(self) -> str:
        return f'FastSpan(name="{self._name}", context={self._context})'

    def otlp_fields(self) -> tuple[Any, ...]:
        """What an OTLP ``Span`` holds, in :func:`~quartstack.tracing.otlp_encoding._encode`'s
        order, read from the slots (no properties, no copies: the span has ended)."""
        attributes = self._attributes
        events = self._events
        links = self._links
        return (
            self._context,
            self._parent,
            self._name,
            self._kind,
            self._start_time,
            self._end_time,
            attributes,
            attributes.dropped if type(attributes) is BoundedAttributes else 0,
            events,
            events.dropped if type(events) is BoundedList else 0,
            links,
            links.dropped if type(links) is BoundedList else 0,
            self._status,
        )


def _bounded(attributes: Mapping[str, Any] | None, limits: SpanLimits) -> BoundedAttributes:
    """The SDK's container for a span's attributes, with its limits."""
    return BoundedAttributes(
        limits.max_span_attributes,
        attributes,
        immutable=False,
        max_value_len=limits.max_span_attribute_length,
    )


def _kept_link(context: SpanContext | None, attributes: types.Attributes) -> bool:
    """The SDK's rule: a link needs a valid context, or attributes or a trace state."""
    return bool(context and (context.is_valid or attributes or context.trace_state))


def _link_attributes(attributes: types.Attributes, limits: SpanLimits) -> BoundedAttributes:
    return BoundedAttributes(
        limits.max_link_attributes,
        attributes,
        max_value_len=limits.max_attribute_length,
        immutable=True,
    )


def _links(links: Sequence[Link], limits: SpanLimits) -> BoundedList[Link]:
    """A new span's links as the SDK keeps them (the last ``max_links`` valid ones)."""
    valid = [
        Link(link.context, _link_attributes(link.attributes, limits))
        for link in links
        if link and _kept_link(link.context, link.attributes)
    ]
    return BoundedList.from_seq(limits.max_links, valid)


class FastTracer(trace.Tracer):
    """Starts :class:`FastSpan` objects with the SDK tracer's own sampler, ids, resource
    and processors (read from the SDK tracer the provider made)."""

    def __init__(self, sdk: SdkTracer, scope: InstrumentationScope, limits: SpanLimits) -> None:
        self.sampler: Sampler = sdk.sampler
        self.resource: Resource = sdk.resource
        self.processor: SpanProcessor = sdk.span_processor
        self.ids: IdGenerator = sdk.id_generator
        self.scope = scope
        self.limits = limits
        # The SDK's own ``always_on`` and ``parentbased_always_on`` (the default) samplers,
        # as the environment names them: their decision for a root or a sampled parent is
        # fixed (record and sample, the parent's trace state, the attributes as given),
        # so it is taken here rather than through a sampling result built for each span.
        self._always_on = self.sampler is ALWAYS_ON
        self._parent_based_on = self.sampler is DEFAULT_ON
        is_random = getattr(self.ids, "is_trace_id_random", None)
        self._random_roots = bool(_RANDOM and is_random is not None and is_random())

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random = bool(parent.trace_flags & _RANDOM)  # 0 on an API without the flag
        else:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random = self._random_roots
        links = links or ()
        if self._always_on or (
            self._parent_based_on and (parent is None or parent.trace_flags.sampled)
        ):
            # What those two SDK samplers decide here, without asking them.
            given = attributes
            trace_state = None if parent is None else parent.trace_state
            sampled = recording = True
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision = result.decision
            given, trace_state = result.attributes, result.trace_state
            sampled = decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = decision.is_recording()  # type: ignore[no-untyped-call]
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[sampled, random],
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        span = FastSpan(
            name,
            span_context,
            parent,
            kind,
            self._attributes(given),
            _links(links, self.limits) if links else (),
            self,
            time_ns() if start_time is None else start_time,
            record_exception,
            set_status_on_exception,
        )
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def _attributes(
        self, given: types.Attributes
    ) -> dict[str, Any] | SharedAttributes | BoundedAttributes:
        """A new span's attributes: shared ones as they are when within the limits, a
        plain dict when the SDK would keep every pair as it is (:func:`_plain`, inlined:
        this runs for every span), else the SDK's own container."""
        if not given:
            return {}
        limits = self.limits
        room = limits.max_span_attributes
        if room is not None and len(given) > room:
            return _bounded(given, limits)
        length = limits.max_span_attribute_length
        if type(given) is SharedAttributes and (length is None or given.longest <= length):
            return given
        for key, value in given.items():
            kind = type(value)
            if (
                kind not in _PLAIN
                or type(key) is not str
                or not key
                or (kind is str and length is not None and len(value) > length)  # type: ignore[arg-type]
            ):
                return _bounded(given, limits)
        return dict(given)

    @_span_manager
    def start_as_current_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class FastTracerProvider(SdkTracerProvider):
    """The SDK's provider, whose tracers start :class:`FastSpan` objects."""

    def __init__(self, **kwargs: Any) -> None:
        self._limits: SpanLimits = kwargs.pop("span_limits", None) or SpanLimits()
        super().__init__(span_limits=self._limits, **kwargs)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        tracer = super().get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        if not isinstance(tracer, SdkTracer):  # the SDK is disabled: its no-op tracer
            return tracer
        scope = InstrumentationScope(  # as the SDK names it (no version: "")
            instrumenting_module_name, instrumenting_library_version or "", schema_url, attributes
        )
        return FastTracer(tracer, scope, self._limits)
