"""One SERVER span per HTTP request, named ``METHOD /route/{template}``.

An ASGI wrapper (outermost, so it also sees the 503 of a request cut at shutdown)
opens the span with the HTTP semantic-convention attributes and records the status;
once the request is done it names the span by the route Quart matched (the name is
the route template, never the raw path; an unmatched request keeps ``METHOD``).
The query string is never recorded: its values may be anything.

An incoming W3C ``traceparent`` is continued according to ``TRACEPARENT_TRUST``:
``proxies`` (default) only when the peer is one of ``TRUSTED_PROXIES``, ``always``, or
``never``. An untrusted client could otherwise choose trace ids (splicing its requests
into other traces) and set the sampled flag on every request, forcing 100 % sampling
past ``OTEL_TRACES_SAMPLER`` — a cheap way to flood the tracing backend.

Attributes are the required and the most useful recommended ones only: the Python
exporter's cost grows with every attribute of every span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from quart import Quart

from quartstack.settings import Settings
from quartstack.web.client_address import (
    TRUSTED_PROXIES_KEY,
    Network,
    is_trusted,
    resolve_client_address,
)
from quartstack.web.http_methods import KNOWN_METHODS, bounded_method
from quartstack.web.observability import ROUTE_SCOPE_KEY

Scope = dict[str, Any]
ASGIApp = Any  # Quart's asgi_app (typed with its own scope classes)


class _Headers(Getter[list[tuple[bytes, bytes]]]):
    """Getter for :func:`opentelemetry.propagate.extract` over raw ASGI headers."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k.lower() == name]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _Headers()


_WANTED_HEADERS = frozenset({b"host", b"x-forwarded-for", b"user-agent"})


def _server_address(scope: Scope, host: str | None) -> tuple[str | None, int | None]:
    if host:
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name and port.isdigit():
            return name, int(port)
        return host, None
    server = scope.get("server")
    if server:
        return str(server[0]), server[1]
    return None, None


class ServerSpans:
    """The ASGI wrapper and the route hook; installed only when tracing is on."""

    def __init__(self, settings: Settings) -> None:
        self.trust = settings.traceparent_trust
        self.tracer = trace.get_tracer("quartstack.http")
        self.networks: tuple[Network, ...] = ()

    def init_app(self, app: Quart) -> None:
        self.networks = app.config.get(TRUSTED_PROXIES_KEY, ())
        app.asgi_app = self.wrap(app.asgi_app)  # type: ignore[method-assign]

    def _parent(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> context.Context | None:
        if self.trust == "never":
            return None
        if self.trust == "proxies":
            client = scope.get("client")
            if not client or not self.networks or not is_trusted(str(client[0]), self.networks):
                return None
        return propagate.extract(headers, getter=_GETTER)

    def _attributes(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        method = scope.get("method", "GET")
        attributes: dict[str, Any] = {
            "http.request.method": bounded_method(method),
            "url.path": scope.get("path", "/"),
            "url.scheme": scope.get("scheme", "http"),
        }
        if method not in KNOWN_METHODS:
            attributes["http.request.method_original"] = method
        wanted = _WANTED_HEADERS
        found: dict[bytes, bytes] = {}
        for key, value in headers:  # one pass for the three headers read here
            name = key.lower()
            if name in wanted and name not in found:
                found[name] = value
        host = found.get(b"host")
        address, port = _server_address(scope, host.decode("latin-1") if host else None)
        if address:
            attributes["server.address"] = address
        if port:
            attributes["server.port"] = port
        client = scope.get("client")
        if client:
            peer = str(client[0])
            forwarded = found.get(b"x-forwarded-for") if self.networks else None
            attributes["client.address"] = resolve_client_address(
                peer, forwarded.decode("latin-1") if forwarded else None, self.networks
            )
        agent = found.get(b"user-agent")
        if agent:
            attributes["user_agent.original"] = agent.decode("latin-1")
        return attributes

    def wrap(self, inner: ASGIApp) -> ASGIApp:
        async def asgi_app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
            method = scope.get("method", "GET")
            prefix = method if method in KNOWN_METHODS else "HTTP"
            span = self.tracer.start_span(
                prefix,
                context=self._parent(scope, headers),
                kind=SpanKind.SERVER,
                attributes=self._attributes(scope, headers),
            )
            status: list[int] = []

            async def traced_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            token = context.attach(trace.set_span_in_context(span))
            try:
                await inner(scope, receive, traced_send)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR))
                raise
            finally:
                context.detach(token)
                ending: dict[str, Any] = {}
                route = scope.get(ROUTE_SCOPE_KEY)
                if route is not None:  # matched: named by its template, never the raw path
                    span.update_name(f"{prefix} {route}")
                    ending["http.route"] = route
                if status:
                    code = status[0]
                    ending["http.response.status_code"] = code
                    if code >= 500:
                        ending["error.type"] = str(code)
                        span.set_status(Status(StatusCode.ERROR))
                span.set_attributes(ending)  # one lock and one pass for all of them
                span.end()

        return asgi_app
