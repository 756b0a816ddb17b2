"""One CLIENT span per backend call, opened by the backend guard every call passes
through (no handler code knows about tracing).

Attributes follow the database and messaging semantic conventions and come only from
settings (system, host, port, database name) and the guard's operation name (our
own low-cardinality verb, e.g. ``find_user``, ``publish``): never a statement, a key,
a credential or a driver message. A failed call records ``error.type`` (the exception
class) and an error status without a description, since driver text may hold secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from quartstack.tracing import state
from quartstack.tracing.fast_spans import shared_attributes

if TYPE_CHECKING:
    from quartstack.settings import Settings

#: ``db.system.name`` of each database backend (semantic-convention values).
DB_SYSTEMS = {"postgres": "postgresql", "mysql": "mysql", "mongodb": "mongodb", "redis": "redis"}
_TRACER = "quartstack.backends"
_tracer: trace.Tracer | None = None


def _base(service: str) -> str:
    return service.split(":", 1)[0]  # "redis:redis-2" (a cluster node's guard) -> "redis"


def default_attributes(service: str) -> dict[str, Any]:
    """What is known from the service name alone (a guard built without settings)."""
    base = _base(service)
    if base in DB_SYSTEMS:
        return {"db.system.name": DB_SYSTEMS[base]}
    if base == "rabbitmq":
        return {"messaging.system": "rabbitmq"}
    return {"quartstack.backend": service}  # Vault: no semantic-convention system exists


def backend_attributes(service: str, settings: Settings) -> dict[str, Any]:
    """The constant attributes of every span of one backend, from its settings."""
    attributes = default_attributes(service)
    base = _base(service)
    host: str | None = None
    port: int | None = None
    if base == "vault" and settings.vault_addr:
        url = urlsplit(settings.vault_addr)
        host = url.hostname
        port = url.port or (443 if url.scheme == "https" else 80)
    elif base == "redis" and not settings.redis_nodes:
        host, port = settings.redis_host, settings.redis_port
    elif base in ("postgres", "mysql", "mongodb", "rabbitmq"):
        host = getattr(settings, f"{base}_host", None)
        port = getattr(settings, f"{base}_port", None)
        database = getattr(settings, f"{base}_database", None)
        if database:
            attributes["db.namespace"] = database
    if host:
        attributes["server.address"] = host
        if port:
            attributes["server.port"] = port
    return attributes


def span_name(service: str, operation: str, attributes: Mapping[str, Any]) -> str:
    """``{operation} {target}``: the database name where known, else the backend."""
    target = attributes.get("db.namespace") or service
    return f"{operation} {target}"


def _operation_attribute(attributes: Mapping[str, Any]) -> str:
    if "messaging.system" in attributes:
        return "messaging.operation.name"
    if "db.system.name" in attributes:
        return "db.operation.name"
    return "quartstack.operation"


#: Operations traced only inside a request (or another span). Outside one they are
#: polling loops, each of which would otherwise be a one-span trace every few seconds:
#: the readiness monitor's checks, the outbox relay's claim (its publishes get their own
#: spans, linked to the requests) and the worker's dead-letter depth watch.
BACKGROUND_NOISE = frozenset({"health", "outbox_relay", "queue_info"})


def wanted(operation: str) -> bool:
    """Whether a call of ``operation`` gets a client span here.

    Not inside a request the sampler dropped, when the sampler would drop the child too
    (:data:`~quartstack.tracing.state.children_of_unsampled_dropped`): a span the sampler
    drops still costs its start, context switch and end (about 56k instructions a call,
    measured). The request's trace context stays current, so what is propagated (the
    RabbitMQ headers) still carries the unsampled decision."""
    if operation in BACKGROUND_NOISE:
        return trace.get_current_span().is_recording()
    if state.children_of_unsampled_dropped:
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled and not parent.is_remote:
            return False
    return True


class SpanSpecs:
    """Name and attributes of one backend's spans, per operation, built once (a guard
    holds one: its attributes do not change, its operations are a handful of verbs).
    The attributes are shared by every span of the operation (:class:`SharedAttributes`:
    checked and encoded once)."""

    __slots__ = ("attributes", "by_operation", "service")

    def __init__(self, service: str, attributes: Mapping[str, Any]) -> None:
        self.service = service
        self.attributes = dict(attributes)
        self.by_operation: dict[str, tuple[str, Mapping[str, Any]]] = {}

    def get(self, operation: str) -> tuple[str, Mapping[str, Any]]:
        spec = self.by_operation.get(operation)
        if spec is None:
            attributes = shared_attributes(
                {**self.attributes, _operation_attribute(self.attributes): operation}
            )
            spec = (span_name(self.service, operation, self.attributes), attributes)
            self.by_operation[operation] = spec
        return spec


class ClientSpan:
    """The current span for one guarded call (nested calls become its children).

    A class rather than ``@contextmanager`` (a generator and its wrapper per call), and
    ``start_span`` with an explicit attach rather than ``start_as_current_span``: the
    same span and context for a fraction of the calls (measured: the SDK's decorator-
    built context manager alone was a fifth of a client span's cost)."""

    __slots__ = ("span", "token")

    def __init__(self, specs: SpanSpecs, operation: str) -> None:
        global _tracer
        if _tracer is None:  # one tracer: the SDK builds a new one on every get_tracer()
            _tracer = trace.get_tracer(_TRACER)
        name, attributes = specs.get(operation)
        self.span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        self.token = context.attach(trace.set_span_in_context(self.span))

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self.span
        if exc is not None:
            # No exception event and no description: an exception's message may carry
            # driver text.
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            span.set_attribute("error.type", type(cause).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
        context.detach(self.token)
        span.end()
