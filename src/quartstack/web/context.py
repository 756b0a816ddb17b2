"""The request, ``g`` and app behind Quart's context proxies, for the per-request hooks.

Each attribute read through ``quart.request``, ``quart.g`` or ``quart.current_app`` goes
through werkzeug's ``LocalProxy`` (three Python calls per read); a hook that reads
several takes the object once with these (one call), then reads it directly. Measured:
about two dozen proxy reads per request in our hooks before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from quart import current_app, g, request

if TYPE_CHECKING:
    from quart import Quart, Request
    from quart.ctx import _AppCtxGlobals

#: The current request object (raises outside a request context, as ``request`` does).
current_request = cast("Callable[[], Request]", cast(Any, request)._get_current_object)
#: The current app context's ``g``.
current_g = cast("Callable[[], _AppCtxGlobals]", cast(Any, g)._get_current_object)
#: The current app.
current_quart = cast("Callable[[], Quart]", cast(Any, current_app)._get_current_object)
