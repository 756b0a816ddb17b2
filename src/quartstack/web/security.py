"""Security headers on every response, and CORS from settings.

The set OWASP recommends for JSON APIs (the REST Security and HTTP Headers cheat
sheets): ``nosniff``, ``X-Frame-Options: DENY``, a CSP that allows nothing (relaxed on
the docs pages), ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store`` where the
response sets no caching of its own, and HSTS only when the request came over HTTPS
(browsers ignore it on plain HTTP) and not in debug. Document-only headers
(``Permissions-Policy``, ``X-Permitted-Cross-Domain-Policies``) mean nothing on JSON.

The headers depend only on the kind of response (docs page or not, HTTPS or not), so
each kind's list is encoded once, and a small ASGI middleware adds it, rather than
werkzeug's ``Headers`` in an ``after_request`` hook: this runs on every request and is
the cheapest place, and even errors raised outside Quart get the headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from quart import Quart, Response
from quart_cors import cors

from quartstack.settings import Settings
from quartstack.web.client_address import Network, is_trusted, parse_networks
from quartstack.web.headers import optional_header
from quartstack.web.request_steps import request_steps

_STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
# The documentation pages load their UI bundle from a CDN and run inline setup code.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com data:; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/scalar"})

_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # added only when the response has no Cache-Control or Expires of its own
    "Cache-Control": "no-store",
}
_HSTS = "max-age=31536000; includeSubDomains"

RawHeaders = list[tuple[bytes, bytes]]
ASGIApp = Any  # Quart's asgi_app: (scope, receive, send) -> Awaitable[None]


def _encode(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def security_headers(*, debug: bool, docs: bool, https: bool = True) -> RawHeaders:
    """The headers of one kind of response: a relaxed CSP on the docs pages, HSTS only
    over HTTPS and outside debug."""
    headers = dict(_COMMON_HEADERS)
    headers["Content-Security-Policy"] = _DOCS_CSP if docs else _STRICT_CSP
    if https and not debug:
        headers["Strict-Transport-Security"] = _HSTS
    return _encode(headers.items())


def _last_value(header: bytes) -> bytes:
    """The value the nearest proxy set (it appends to a list, as with X-Forwarded-For)."""
    return header.rsplit(b",", 1)[-1].strip().lower()


class SecurityHeadersMiddleware:
    """Adds the security headers, and ``Vary: Origin`` for requests without an
    ``Origin`` (quart-cors handles the others), to every HTTP response.

    A request came over HTTPS when TLS ended on our socket (scope scheme ``https``) or
    when a trusted proxy (``trusted_proxies``, as for ``X-Forwarded-For``) says so in
    ``X-Forwarded-Proto``. A header the application already set is left alone.
    """

    def __init__(
        self, app: ASGIApp, *, debug: bool, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self.app = app
        # one encoded list per kind of response, indexed [docs][https]
        self.kinds = tuple(
            tuple(security_headers(debug=debug, docs=docs, https=https) for https in (False, True))
            for docs in (False, True)
        )
        self.trusted_peer: Callable[[str], bool] | None = None
        if trusted_proxies:
            self.trusted_peer = lru_cache(maxsize=1024)(
                lambda peer: is_trusted(peer, trusted_proxies)
            )

    def _request_facts(self, scope: dict[str, Any]) -> tuple[bool, bool]:
        """(has an ``Origin``, came over HTTPS), in one pass over the request headers."""
        trusted_peer = self.trusted_peer
        https = scope.get("scheme") == "https"
        proxied = False
        if not https and trusted_peer is not None:
            client = scope.get("client")
            proxied = client is not None and trusted_peer(client[0])
        origin = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = True
            elif proxied and name == b"x-forwarded-proto":
                https = _last_value(value) == b"https"
        return origin, https

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_origin, https = self._request_facts(scope)
        extra = self.kinds[scope["path"] in DOCS_PATHS][https]
        vary_origin = not has_origin

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _merged(message["headers"], extra, vary_origin)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _merged(headers: Iterable[tuple[bytes, bytes]], extra: RawHeaders, vary: bool) -> RawHeaders:
    result = list(headers)
    present = {name for name, _ in result}
    if b"expires" in present:  # caching of its own, in the HTTP/1.0 way
        present.add(b"cache-control")
    result.extend(item for item in extra if item[0] not in present)
    if vary:
        if b"vary" not in present:
            result.append((b"vary", b"Origin"))
        else:
            result = [_vary_with_origin(item) if item[0] == b"vary" else item for item in result]
    return result


def _vary_with_origin(item: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    values = [v.strip().lower() for v in item[1].split(b",")]
    if b"origin" in values or b"*" in values:
        return item
    return item[0], item[1] + b", Origin"


class SecurityHeaders:
    """Security headers on every answer, added at the ASGI level so even errors get them."""

    KEY = "quartstack.security_headers"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        app.asgi_app = SecurityHeadersMiddleware(  # type: ignore[method-assign,assignment]
            app.asgi_app,
            debug=self.settings.debug,
            trusted_proxies=parse_networks(self.settings.trusted_proxies),
        )


class Cors:
    """Any origin without credentials in debug; otherwise the configured allow-list.

    quart-cors does the CORS work, but it re-reads its configuration on every
    response; requests without an ``Origin`` (probes, scrapes, server-to-server
    calls: most traffic) only need ``Vary: Origin``, which the security-headers
    middleware adds, so quart-cors runs only for requests that carry an ``Origin``.
    """

    KEY = "quartstack.cors"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_app(self, app: Quart) -> None:
        app.extensions[self.KEY] = self
        hooks = app.after_request_funcs.setdefault(None, [])
        registered = len(hooks)
        if self.settings.debug:
            cors(app, allow_origin="*", allow_credentials=False, max_age=600)
        else:
            cors(
                app,
                allow_origin=list(self.settings.cors_origins),
                allow_credentials=True,
                max_age=600,
                expose_headers=[
                    "X-Request-ID",
                    "Retry-After",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                    "ETag",
                    "X-Cache",
                    "Idempotency-Replayed",
                ],
            )
        if len(hooks) != registered + 1:
            raise RuntimeError("quart-cors no longer registers exactly one after_request hook")
        apply_cors = hooks.pop()

        async def cors_for_cross_origin_requests(response: Response) -> Response:
            if optional_header("Origin") is None:
                return response
            result: Response = await apply_cors(response)
            return result

        request_steps(app).after(cors_for_cross_origin_requests)
