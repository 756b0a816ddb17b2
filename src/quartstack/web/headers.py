"""Header lookups for the per-request hooks.

werkzeug's ``Headers.get`` and ``in`` build a ``BadRequestKeyError`` (an HTTP
exception) for every header that is absent, which is the common case for
``X-Request-ID``, ``Origin`` or ``X-Forwarded-For``; and iterating ``Headers`` runs
Python code per header. A scan of the ASGI scope's raw header list (the very pairs
Quart builds ``request.headers`` from, decoded the same way, as latin-1) costs a
fraction of either on the hot path.
"""

from __future__ import annotations

from functools import lru_cache

from quartstack.web.context import current_request


@lru_cache(maxsize=64)
def _wire_name(name: str) -> bytes:
    return name.lower().encode("latin-1")


def optional_header(name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None when absent.

    Only headers the client sent: not the ``Remote-Addr`` and default ``Host`` that
    Quart adds to ``request.headers``."""
    wanted = _wire_name(name)
    for key, value in current_request().scope["headers"]:
        if key.lower() == wanted:  # servers send lowercase names; a test client may not
            return value.decode("latin-1")
    return None
