"""Trace context across RabbitMQ: producer and consumer spans, W3C headers in messages.

Plain OpenTelemetry API: the spans go to the tracer provider the process set up
(:mod:`quartstack.tracing`; while tracing is off every helper here returns at the
first line: no span, nothing injected, nothing stored), and the context
travels in the AMQP message headers as ``traceparent``/``tracestate`` (the global
propagator, W3C trace context and baggage unless ``OTEL_PROPAGATORS`` says other).

Following the messaging semantic conventions: a ``PRODUCER`` span per message
(``<exchange or queue> publish``) whose context is the one injected into the
message (its creation context); the consumer's ``CONSUMER`` span
(``<queue> process``) is a child of that context, since each delivery is processed
on its own, and links to it too (the link is what the conventions require; the
parent puts producer and consumer in one trace). A message that was caused by
something earlier (an outbox event written by a request) gets a span link to that
context: the publish happens later, in its own trace, and the link leads back.
Never the body: only names, ids and sizes are attributes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode

from quartstack.tracing import state

SYSTEM = "rabbitmq"
tracer = trace.get_tracer("quartstack.rabbitmq")

#: A trace context as text headers (``traceparent``, ``tracestate``, ``baggage``).
Carrier = dict[str, str]
#: AMQP message headers (values of any AMQP field type).
Headers = dict[str, Any]


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP headers, whose values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def capture_context() -> Carrier | None:
    """The current trace context as headers (None outside a recorded trace): what an
    outbox row stores so that its later publish can link back to the request."""
    if not state.active:
        return None
    carrier: Carrier = {}
    propagate.inject(carrier)
    return carrier or None


def _links(caused_by: Mapping[str, Any] | None) -> list[Link]:
    if not caused_by:
        return []
    cause = trace.get_current_span(propagate.extract(caused_by, getter=_GETTER))
    context = cause.get_span_context()
    return [Link(context)] if context.is_valid else []


def start_publish(
    destination: str,
    routing_key: str,
    message_id: str,
    *,
    body_size: int | None = None,
    caused_by: Mapping[str, Any] | None = None,
) -> tuple[Span, Headers]:
    """Start the ``PRODUCER`` span of one message (a child of the current span, linked
    to ``caused_by``); return it and the headers that carry its context. The caller
    ends it with :func:`end_publish` once the broker answered."""
    if not state.active:
        return INVALID_SPAN, {}
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message_id,
    }
    if body_size is not None:
        attributes["messaging.message.body.size"] = body_size
    span = tracer.start_span(
        f"{destination} publish",
        kind=SpanKind.PRODUCER,
        attributes=attributes,
        links=_links(caused_by),
    )
    headers: Headers = {}
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span, headers


def end_publish(span: Span, error: BaseException | None = None) -> None:
    """End a publish span; an error marks it failed with the error's kind (not its text)."""
    if error is not None:
        _fail(span, error)
    span.end()


class OutgoingMessage(Protocol):
    """What a batch publish span needs to know of a message (``ExchangeMessage``)."""

    @property
    def routing_key(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def message_id(self) -> str: ...
    @property
    def caused_by(self) -> Mapping[str, str] | None: ...


def start_batch(
    exchange: str, messages: Sequence[OutgoingMessage]
) -> tuple[list[Span], list[Headers]]:
    """One publish span per message of a pipelined batch (each message has its own
    context, and its own cause to link to)."""
    started = [
        start_publish(
            exchange,
            m.routing_key,
            m.message_id,
            body_size=len(m.body),
            caused_by=m.caused_by,
        )
        for m in messages
    ]
    return [span for span, _ in started], [headers for _, headers in started]


def end_batch(spans: Sequence[Span], outcomes: Sequence[BaseException | None]) -> None:
    for span, outcome in zip(spans, outcomes, strict=True):
        end_publish(span, outcome)


@contextlib.contextmanager
def publishing(
    destination: str, routing_key: str, message_id: str, *, body_size: int | None = None
) -> Iterator[Headers]:
    """One message's publish span, current inside the block (the backend call's own
    span nests under it); yields the headers to send with the message."""
    if not state.active:
        yield {}
        return
    span, headers = start_publish(destination, routing_key, message_id, body_size=body_size)
    with trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield headers
        except BaseException as exc:
            end_publish(span, exc)
            raise
    end_publish(span)


@contextlib.contextmanager
def processing(
    queue: str,
    headers: Mapping[str, Any] | None,
    *,
    message_id: str | None = None,
    exchange: str | None = None,
    routing_key: str | None = None,
    body_size: int | None = None,
) -> Iterator[Span]:
    """The ``CONSUMER`` span of one delivery, current inside the block: a child of the
    producer's context from ``headers`` (and linked to it), a new trace without one."""
    if not state.active:
        yield INVALID_SPAN
        return
    parent = propagate.extract(headers or {}, getter=_GETTER, context=otel_context.Context())
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": exchange or queue,
        "messaging.destination.subscription.name": queue,
    }
    if routing_key is not None:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if body_size is not None:
        attributes["messaging.message.body.size"] = body_size
    producer = trace.get_current_span(parent).get_span_context()
    with tracer.start_as_current_span(
        f"{queue} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(producer)] if producer.is_valid else [],
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _fail(span, exc)
            raise


def _fail(span: Span, error: BaseException) -> None:
    kind = getattr(error, "kind", None)
    error_type = kind if isinstance(kind, str) else type(error).__name__
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))
