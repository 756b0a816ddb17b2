"""Security headers on every response, and CORS from settings.

The headers are the same on every response, so they are added by a small ASGI
middleware as pre-encoded bytes rather than through werkzeug's ``Headers`` in an
``after_request`` hook: this runs on every request and is the cheapest place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from quart import Quart, Response
from quart_cors import cors

from quartstack.settings import Settings
from quartstack.web.headers import optional_header

_STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# The documentation pages load their UI bundle from a CDN and run inline setup code.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com data:; img-src 'self' data: https:; "
    "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc", "/scalar"})

_COMMON_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "X-Permitted-Cross-Domain-Policies": "none",
}
_HSTS = "max-age=31536000; includeSubDomains"

RawHeaders = list[tuple[bytes, bytes]]
ASGIApp = Any  # Quart's asgi_app: (scope, receive, send) -> Awaitable[None]


def _encode(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def security_headers(*, debug: bool, docs: bool) -> RawHeaders:
    """The headers every response gets (HSTS only outside debug; a relaxed CSP on docs)."""
    headers = dict(_COMMON_HEADERS)
    if not debug:
        headers["Strict-Transport-Security"] = _HSTS
    headers["Content-Security-Policy"] = _DOCS_CSP if docs else _STRICT_CSP
    return _encode(headers.items())


def _has_origin(scope: dict[str, Any]) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


class SecurityHeadersMiddleware:
    """Adds the security headers, and ``Vary: Origin`` for requests without an
    ``Origin`` (quart-cors handles the others), to every HTTP response.

    A header the application already set is left alone.
    """

    def __init__(self, app: ASGIApp, *, debug: bool) -> None:
        self.app = app
        self.strict = security_headers(debug=debug, docs=False)
        self.docs = security_headers(debug=debug, docs=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs if scope["path"] in DOCS_PATHS else self.strict
        vary_origin = not _has_origin(scope)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _merged(message["headers"], extra, vary_origin)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _merged(headers: Iterable[tuple[bytes, bytes]], extra: RawHeaders, vary: bool) -> RawHeaders:
    result = list(headers)
    present = {name for name, _ in result}
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
            app.asgi_app, debug=self.settings.debug
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

        hooks.append(cors_for_cross_origin_requests)
