"""A real OTLP/HTTP trace receiver for tests: an HTTP server on a free loopback port that
decodes protobuf ``ExportTraceServiceRequest`` bodies (as a collector, Jaeger or Tempo
would) and keeps every span, so a test can assert the span tree an app exported.

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}  # http://127.0.0.1:<port>
        ...
        server = receiver.wait_for_span(lambda s: s.name == "GET /examples/...")
        child = receiver.wait_for_span(lambda s: s.parent_span_id == server.span_id)
        tree = receiver.trace(server.trace_id)

Only the traces signal (``POST /v1/traces``) is decoded; other paths answer 200 and are
counted in ``requests`` so a test can prove that nothing at all was exported.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.net import free_port

#: OTLP span kinds (``trace_pb2.Span.SpanKind``) by their short names.
KIND_NAMES = {
    trace_pb2.Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}
#: OTLP status codes by their short names.
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (lists and maps recursively)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One received span; ids are lowercase hex (as in a ``traceparent`` header), the
    parent id is ``""`` for a root span."""

    name: str
    kind: str  # "server", "client", "producer", "consumer", "internal", "unspecified"
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str  # "unset", "ok", "error"
    status_message: str
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int
    links: tuple[Link, ...] = ()
    events: tuple[dict[str, Any], ...] = field(default=())

    @property
    def service(self) -> str | None:
        value = self.resource.get("service.name")
        return None if value is None else str(value)

    def all_strings(self) -> Iterator[str]:
        """Every string in this span (name, attributes, resource, events, status), for
        scanning it for secrets."""
        yield self.name
        yield self.status_message
        for mapping in (self.attributes, self.resource):
            yield from _strings(mapping)
        for event in self.events:
            yield from _strings(event)
        for link in self.links:
            yield from _strings(link.attributes)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def decode(body: bytes) -> list[Span]:
    """The spans of one protobuf ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        name=span.name,
                        kind=KIND_NAMES.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=attributes(span.attributes),
                        status=STATUS_NAMES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        resource=resource,
                        scope=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        links=tuple(
                            Link(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                attributes(link.attributes),
                            )
                            for link in span.links
                        ),
                        events=tuple(
                            {"name": event.name, **attributes(event.attributes)}
                            for event in span.events
                        ),
                    )
                )
    return spans


def count_spans(body: bytes) -> int:
    """How many spans one protobuf ``ExportTraceServiceRequest`` holds (parsed, not
    converted: a malformed body still fails)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(
        len(scope_spans.spans)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) receiver on ``127.0.0.1:<free port>``, on its own thread.

    ``endpoint`` is the base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends
    ``/v1/traces``); ``traces_endpoint`` the full one for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``.
    """

    def __init__(self, port: int | None = None, *, keep: bool = True) -> None:
        self.port = port or free_port()
        #: False: spans are parsed (protobuf's C code) and counted, not kept as :class:`Span`
        #: objects; a benchmark's receiver, so the bench process spends little CPU per span
        #: on the machine the measured server shares (as a collector elsewhere would).
        self.keep = keep
        #: Spans received so far (kept or not).
        self.span_count = 0
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.traces_endpoint = f"{self.endpoint}/v1/traces"
        #: Every HTTP request received, as ``(method, path, content-type)``.
        self.requests: list[tuple[str, str, str]] = []
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                content_type = self.headers.get("Content-Type") or ""
                receiver._received(self.command, self.path, content_type, body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def _received(self, method: str, path: str, content_type: str, body: bytes) -> None:
        spans: list[Span] = []
        count = 0
        if path.rstrip("/").endswith("/v1/traces"):
            if self.keep:
                spans = decode(body)
                count = len(spans)
            else:
                count = count_spans(body)
        with self._lock:
            self.requests.append((method, path, content_type))
            self._spans.extend(spans)
            self.span_count += count

    # -- queries ---------------------------------------------------------------------------

    @property
    def spans(self) -> list[Span]:
        """A snapshot of every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.requests.clear()

    def find(self, predicate: Callable[[Span], bool]) -> list[Span]:
        return [span for span in self.spans if predicate(span)]

    def wait_for_spans(
        self,
        predicate: Callable[[Span], bool],
        *,
        count: int = 1,
        timeout: float = 30.0,
        what: str | None = None,
    ) -> list[Span]:
        """Poll until at least ``count`` received spans match ``predicate``; return them all.
        Fails with an ``AssertionError`` listing what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(s.name, s.kind, s.trace_id[:8]) for s in self.spans]
                raise AssertionError(
                    f"{what or 'matching spans'}: {len(found)}/{count} within {timeout} s; "
                    f"received {seen}"
                )
            time.sleep(0.02)

    def wait_for_span(
        self, predicate: Callable[[Span], bool], *, timeout: float = 30.0, what: str | None = None
    ) -> Span:
        """The first received span matching ``predicate`` (polled under ``timeout``)."""
        return self.wait_for_spans(predicate, timeout=timeout, what=what)[0]

    # -- span tree helpers -----------------------------------------------------------------

    def trace(self, trace_id: str) -> list[Span]:
        """Every received span of one trace, in start order."""
        return sorted(self.find(lambda s: s.trace_id == trace_id), key=lambda s: s.start_ns)

    def children(self, parent: Span) -> list[Span]:
        """The direct children of ``parent`` (same trace, parent id = its span id)."""
        return [
            s
            for s in self.trace(parent.trace_id)
            if s.parent_span_id == parent.span_id and s.span_id != parent.span_id
        ]

    def descendants(self, ancestor: Span) -> list[Span]:
        """Every span below ``ancestor`` in its trace, depth first."""
        out: list[Span] = []
        for child in self.children(ancestor):
            out.append(child)
            out.extend(self.descendants(child))
        return out

    def parent(self, span: Span) -> Span | None:
        """The received parent of ``span``, or ``None`` (root, or parent not received)."""
        if not span.parent_span_id:
            return None
        found = self.find(
            lambda s: s.trace_id == span.trace_id and s.span_id == span.parent_span_id
        )
        return found[0] if found else None

    def linked_to(self, span: Span) -> list[Span]:
        """Received spans that carry a link to ``span``."""
        return self.find(
            lambda s: any(
                link.trace_id == span.trace_id and link.span_id == span.span_id for link in s.links
            )
        )

    def tree(self, trace_id: str) -> str:
        """An indented text drawing of one trace, for assertion messages."""
        spans = self.trace(trace_id)
        ids = {s.span_id for s in spans}
        lines: list[str] = []

        def draw(span: Span, depth: int) -> None:
            lines.append(f"{'  ' * depth}{span.name} [{span.kind}, {span.status}]")
            for child in spans:
                if child.parent_span_id == span.span_id:
                    draw(child, depth + 1)

        for root in spans:
            if root.parent_span_id not in ids:
                draw(root, 0)
        return "\n".join(lines)

    def all_strings(self) -> Iterator[str]:
        """Every string of every received span (see :meth:`Span.all_strings`)."""
        for span in self.spans:
            yield from span.all_strings()
