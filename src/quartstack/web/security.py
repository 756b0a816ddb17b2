"""Security headers on every response, and CORS from settings."""

from __future__ import annotations

from quart import Quart, Response, request
from quart_cors import cors

from quartstack.settings import Settings

_STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
# The documentation pages load their UI bundle from a CDN and run inline setup code.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com data:; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/redocs", "/scalar"})

_COMMON_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "X-Permitted-Cross-Domain-Policies": "none",
}


def init_security_headers(app: Quart, settings: Settings) -> None:
    headers = dict(_COMMON_HEADERS)
    if not settings.debug:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"

    @app.after_request
    async def add_security_headers(response: Response) -> Response:
        response.headers.update(headers)
        response.headers["Content-Security-Policy"] = (
            _DOCS_CSP if request.path in DOCS_PATHS else _STRICT_CSP
        )
        return response


def init_cors(app: Quart, settings: Settings) -> Quart:
    """Any origin without credentials in debug; otherwise the configured allow-list."""
    if settings.debug:
        return cors(app, allow_origin="*", allow_credentials=False, max_age=600)
    return cors(
        app,
        allow_origin=list(settings.cors_origins),
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
