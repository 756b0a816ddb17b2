"""The context helpers return the very objects behind Quart's proxies, and fail as the
proxies do outside a request."""

from __future__ import annotations

import pytest
from quart import Quart, current_app, g, request

from quartstack.web.context import current_g, current_quart, current_request


async def test_the_objects_behind_the_proxies() -> None:
    app = Quart("context")
    seen: dict[str, object] = {}

    @app.get("/x")
    async def view() -> str:
        seen["request"] = current_request() is request._get_current_object()  # type: ignore[attr-defined]
        g.marker = "set through the proxy"
        seen["g"] = current_g().marker
        seen["app"] = current_quart() is current_app._get_current_object()  # type: ignore[attr-defined]
        return "ok"

    response = await app.test_client().get("/x")
    assert response.status_code == 200
    assert seen == {"request": True, "g": "set through the proxy", "app": True}


def test_outside_a_request_they_raise_like_the_proxies() -> None:
    with pytest.raises(RuntimeError, match="request context"):
        current_request()
    with pytest.raises(RuntimeError, match="app context"):
        current_g()
