"""AUTH_MODE: off by default with a loud warning (the first README command keeps
working), and settings that cannot authenticate anyone refuse to start."""

from __future__ import annotations

import json

import pytest

from quartstack.app import create_app
from quartstack.settings import SettingsError, load_settings
from tests.support.app import captured_json_logs, running_app


def _warnings(**settings) -> list[str]:
    with captured_json_logs() as logs:
        create_app(load_settings(**settings))
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    return [line["message"] for line in lines if line["level"] == "WARNING"]


def test_no_auth_settings_serve_with_a_loud_warning():
    assert any(m.startswith("AUTHENTICATION IS OFF") for m in _warnings())
    required = {
        "auth_mode": "required",
        "auth_jwt_issuer": "https://issuer.example/",
        "auth_jwt_audience": "quartstack",
        "auth_jwks_url": "https://issuer.example/jwks",
    }
    assert not any(m.startswith("AUTHENTICATION IS OFF") for m in _warnings(**required))


async def test_auth_mode_none_lets_every_route_through():
    async with running_app() as (_app, client):
        for method, url in (("GET", "/health/all"), ("DELETE", "/redis/cache/responses")):
            response = await client.open(url, method=method)
            assert response.status_code not in (401, 403), url


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth_mode": "required"}, "AUTH_MODE=required needs"),
        ({"auth_jwks_url": "https://issuer.example/jwks"}, "needs AUTH_JWT_ISSUER"),
        ({"auth_jwt_algorithms": "RS256,HS256"}, "only asymmetric algorithms"),
        ({"auth_jwt_algorithms": "none"}, "only asymmetric algorithms"),
        ({"auth_api_keys_secret": "keys"}, "needs VAULT_ADDR"),
    ],
)
def test_settings_that_cannot_authenticate_refuse_to_start(settings, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(**settings)
