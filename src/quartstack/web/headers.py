"""Header lookups for the per-request hooks.

werkzeug's ``Headers.get`` and ``in`` build a ``BadRequestKeyError`` (an HTTP
exception) for every header that is absent, which is the common case for
``X-Request-ID``, ``Origin`` or ``X-Forwarded-For``; a linear scan of the few
request headers is several times cheaper on the hot path.
"""

from __future__ import annotations

from quartstack.web.context import current_request


def optional_header(name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None when absent."""
    wanted = name.lower()
    for key, value in current_request().headers.items():
        if key.lower() == wanted:
            return value
    return None
