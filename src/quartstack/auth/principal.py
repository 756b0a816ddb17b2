"""Who made the request: the principal an API key or a JWT stands for."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from quart import g

from quartstack.web.client_address import client_address

_G_KEY = "auth_principal"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``id`` is what audit lines name (``key:<key id>`` or
    ``jwt:<sub>``); never a credential."""

    id: str
    kind: Literal["api_key", "jwt"]
    name: str
    scopes: frozenset[str]


def set_principal(principal: Principal) -> None:
    setattr(g, _G_KEY, principal)


def current_principal() -> Principal | None:
    """The request's principal, None when anonymous (or outside a request)."""
    try:
        principal: Principal | None = getattr(g, _G_KEY, None)
    except RuntimeError:
        return None
    return principal


def rate_limit_identity() -> str:
    """What rate limits count by: the principal when one is authenticated, else the
    client address. Hashed, so it is short and free of ``{}`` (it becomes a Redis
    Cluster hash tag) and a ``sub`` claim never appears in Redis."""
    principal = current_principal()
    if principal is None:
        return client_address()
    return "p:" + hashlib.sha256(principal.id.encode()).hexdigest()[:24]
