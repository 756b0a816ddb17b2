"""Which scope each route needs, declared next to the route with :func:`requires`.

``public`` routes need nothing (the probes, ``/``, the API docs); ``metrics`` is
``/metrics``, guarded by its own token (``METRICS_TOKEN``); ``read``, ``write`` and
``admin`` are the scopes a credential carries. Scopes are independent: ``admin``
does not imply ``write``. A route without a decision needs ``admin`` (fail closed),
and tests/auth/test_route_scopes.py fails until the route declares one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

Scope = Literal["public", "metrics", "read", "write", "admin"]
CREDENTIAL_SCOPES: tuple[str, ...] = ("read", "write", "admin")
FAIL_CLOSED: Scope = "admin"

_ATTRIBUTE = "_quartstack_scope"

#: Routes other libraries register (quart-schema's document and UIs).
FRAMEWORK_SCOPES: dict[str, Scope] = {
    "openapi": "public",
    "swagger_ui": "public",
    "redoc_ui": "public",
}


def requires(scope: Scope) -> Callable[[F], F]:
    """Declare the scope a view needs (put it right under the route decorator)."""

    def decorate(func: F) -> F:
        setattr(func, _ATTRIBUTE, scope)
        return func

    return decorate


def declared_scope(endpoint: str, view: object) -> Scope | None:
    """The scope declared for a view, or None if the route made no decision."""
    scope: Scope | None = getattr(view, _ATTRIBUTE, None)
    return scope if scope is not None else FRAMEWORK_SCOPES.get(endpoint)


def scope_for(endpoint: str, view: object) -> Scope:
    """The scope a request to ``view`` needs (``admin`` if undeclared)."""
    return declared_scope(endpoint, view) or FAIL_CLOSED
