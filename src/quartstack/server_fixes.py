"""Workarounds for two Hypercorn (0.17-0.18, asyncio and uvloop) HTTP/1.1 defects.

1. A connection the client closes while it is idle (no request yet, or between
   keep-alive requests) is not released: ``TCPServer`` reads the EOF and leaves
   its read loop, but the keep-alive idle task stays pending in the connection's
   task group, which only exits (and closes the socket) when that task ends, at
   ``keep_alive_timeout`` (75 s). Each such connection sits in CLOSE-WAIT holding a
   file descriptor: a few hundred connect/close per second exhaust the process's
   descriptors. Fix: once the read loop has ended nothing more can arrive, so the
   idle timer is stopped and the connection closes at once.

2. ``Expect: 100-continue`` is answered with ``100 Continue`` as soon as the
   request head is parsed, before the app can refuse the body, so a client is told
   to send a body that will get a 413. Fix: no ``100 Continue`` when the declared
   ``Content-Length`` is over ``MAX_BODY_BYTES``; the app's 413 is the answer.

Both wrap a Hypercorn method and fall back to doing nothing if a new Hypercorn
renames it; ``tests/foundation/test_connections.py`` notices the regression.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h11

logger = logging.getLogger("quartstack.server")

#: Largest request line plus headers (README: Limits). Hypercorn's h11 enforces it only
#: on a head that arrives in several reads; the app checks the rest (431 problem).
MAX_REQUEST_HEAD_BYTES = 16 * 1024

_state: dict[str, int] = {}
_PATCHED = "_quartstack_patched"


def max_body_bytes() -> int:
    """The app's body limit, as set by :func:`apply_hypercorn_fixes` (uvicorn reads it too)."""
    return _state.get("max_body_bytes", 2**63)


def set_max_body_bytes(limit: int) -> None:
    _state["max_body_bytes"] = limit


def apply_hypercorn_fixes(max_body_bytes: int) -> None:
    """Install both workarounds (idempotent); ``max_body_bytes`` is the app's limit."""
    set_max_body_bytes(max_body_bytes)
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol.h11 import H11Protocol

    _wrap(TCPServer, "_read_data", _release_after_eof)
    _wrap(H11Protocol, "_send_h11_event", _no_continue_for_oversized_bodies)


def _wrap(cls: type, name: str, make_method: Callable[[Any], Callable[..., Any]]) -> None:
    """Replace ``cls.name`` with ``make_method(original)``: the replacement calls the
    original itself, so a patched method costs no extra coroutine (``_send_h11_event``
    runs three times a request)."""
    original = getattr(cls, name, None)
    if original is None:
        logger.warning("hypercorn fix not applied", extra={"method": f"{cls.__name__}.{name}"})
        return
    if getattr(original, _PATCHED, False):
        return
    method = functools.wraps(original)(make_method(original))
    setattr(method, _PATCHED, True)
    setattr(cls, name, method)


def _release_after_eof(original: Callable[[Any], Awaitable[None]]) -> Callable[..., Any]:
    async def _read_data(server: Any) -> None:
        """Run the read loop; when it ends (EOF, reset, read timeout), stop the idle timer.

        A request still in flight keeps its own task in the group and finishes; the
        idle timer cannot be restarted afterwards, since h11 never starts a new cycle
        after the peer's EOF.
        """
        try:
            await original(server)
        finally:
            idle_task = getattr(server, "idle_task", None)
            if idle_task is not None:
                await idle_task.stop()

    return _read_data


def _no_continue_for_oversized_bodies(
    original: Callable[[Any, Any], Awaitable[None]],
) -> Callable[..., Any]:
    async def _send_h11_event(protocol: Any, event: Any) -> None:
        if (
            isinstance(event, h11.InformationalResponse)
            and event.status_code == 100
            and _declared_length(protocol) > max_body_bytes()
        ):
            return  # the app answers 413; the client must not send the body
        await original(protocol, event)

    return _send_h11_event


def _declared_length(protocol: Any) -> int:
    scope = getattr(getattr(protocol, "stream", None), "scope", None)
    if not scope:
        return 0
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
