"""JWT bearer tokens against a real OIDC issuer (tests/support/oidc.py): every way a
token can be wrong is a 401 ``invalid_token`` problem, a valid one passes, the JWKS
follows a key rotation, and a flood of unknown ``kid`` values cannot make the
service hammer the issuer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from tests.support.app import captured_json_logs, running_app
from tests.support.oidc import TestIssuer, ec_key
from tests.support.polling import wait_until

READ_ROUTE = "/health/all"  # scope read, answers 200 without any backend


@pytest.fixture(scope="module")
def issuer():
    with TestIssuer() as server:
        yield server


@pytest.fixture(scope="module")
async def client(issuer):
    async with running_app(**issuer.settings()) as (_app, test_client):
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_invalid_token(client, token: str) -> None:
    response = await client.get(READ_ROUTE, headers=bearer(token))
    assert response.status_code == 401, await response.get_data()
    assert response.content_type == "application/problem+json"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    body = await response.get_json()
    assert body["type"] == "/problems/invalid-token" and token not in json.dumps(body)


async def test_a_valid_token_passes_with_its_scope(client, issuer):
    for key in issuer.keys:  # RSA and EC
        response = await client.get(READ_ROUTE, headers=bearer(issuer.mint("read", key=key)))
        assert response.status_code == 200, await response.get_data()


async def test_no_credential_is_401_without_an_error_code(client):
    response = await client.get(READ_ROUTE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="quartstack"'
    assert (await response.get_json())["type"] == "/problems/unauthorized"


async def test_scopes_come_from_scope_or_scp(client, issuer):
    as_list = issuer.mint(None, scp=["read", "write"])
    assert (await client.get(READ_ROUTE, headers=bearer(as_list))).status_code == 200
    response = await client.get(READ_ROUTE, headers=bearer(issuer.mint("write admin")))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="read"' in response.headers["WWW-Authenticate"]
    assert (await response.get_json())["type"] == "/problems/insufficient-scope"


async def test_expired_not_yet_valid_wrong_audience_wrong_issuer(client, issuer):
    now = int(time.time())
    skew = 30  # AUTH_CLOCK_SKEW_SECONDS default
    for claims in (
        {"exp": now - skew - 5},
        {"nbf": now + skew + 60},
        {"aud": "another-service"},
        {"iss": "https://evil.example/"},
        {"exp": None},  # required
        {"aud": None},
    ):
        await assert_invalid_token(client, issuer.mint("read", **claims))
    # within the clock skew: still fine
    ok = issuer.mint("read", exp=now - skew + 10)
    assert (await client.get(READ_ROUTE, headers=bearer(ok))).status_code == 200


async def test_alg_none_and_foreign_signatures(client, issuer):
    claims = issuer.claims("read")
    kid = issuer.keys[0].kid
    await assert_invalid_token(
        client, jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    )
    stranger = ec_key()
    stranger.kid = issuer.keys[1].kid  # a known kid, signed by someone else
    await assert_invalid_token(client, issuer.mint("read", key=stranger))
    await assert_invalid_token(client, "not.a.jwt")
    await assert_invalid_token(client, issuer.mint("read") + "x")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_hs256_signed_with_the_public_key_is_refused(client, issuer):
    """Algorithm confusion: a verifier that took the alg from the header would check
    HMAC with the public key (which everyone has) as the secret."""
    key = issuer.keys[0]
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = _b64(json.dumps(issuer.claims("read admin write")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(key.public_pem, signing_input, hashlib.sha256).digest())
    await assert_invalid_token(client, f"{header}.{payload}.{signature}")


async def test_the_reason_is_logged_and_the_token_never(client, issuer):
    token = issuer.mint("read", exp=int(time.time()) - 3600)
    with captured_json_logs() as logs:
        await assert_invalid_token(client, token)
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert any(line.get("reason") == "token expired" for line in lines), lines
    assert token not in logs.getvalue()
    assert token.split(".")[2] not in logs.getvalue()


async def test_key_rotation_and_unknown_kid_flood():
    """A new kid makes the service refetch once; a flood of made-up kids does not
    make it fetch more than once per AUTH_JWKS_MIN_REFRESH_SECONDS."""
    with TestIssuer() as issuer:
        settings = issuer.settings(auth_jwks_min_refresh_seconds=2.0)
        async with running_app(**settings) as (_app, client):
            assert (await client.get(READ_ROUTE, headers=bearer(issuer.mint()))).status_code == 200
            assert issuer.take_fetches() == 1
            old = issuer.keys[0]
            new = issuer.rotate()
            minted_at = time.monotonic()
            rotated = issuer.mint("read", key=new)

            async def accepted() -> bool:
                response = await client.get(READ_ROUTE, headers=bearer(rotated))
                return response.status_code == 200

            # The first fetch was just now: the new kid waits for the interval, then works.
            await wait_until(accepted, timeout=10, interval=0.2, what="the rotated key works")
            assert time.monotonic() - minted_at < 10
            fetches = issuer.take_fetches()
            assert 1 <= fetches <= 2, fetches  # one refetch (two only if it crossed the interval)
            # the rotated-out key no longer verifies
            await assert_invalid_token(client, issuer.mint("read", key=old))
            issuer.take_fetches()

            async def unknown_kid(i: int) -> int:
                token = issuer.mint("read", headers={"kid": f"made-up-{i}"})
                return (await client.get(READ_ROUTE, headers=bearer(token))).status_code

            started = time.monotonic()
            statuses = await asyncio.gather(*(unknown_kid(i) for i in range(200)))
            elapsed = time.monotonic() - started
            assert set(statuses) == {401}
            allowed = 1 + int(elapsed / 2.0)
            assert issuer.take_fetches() <= allowed, (elapsed, allowed)
