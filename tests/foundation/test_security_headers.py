"""Security headers: the OWASP set for JSON APIs, HSTS only over HTTPS (TLS on our socket,
or X-Forwarded-Proto from a trusted proxy), Cache-Control only where the response has none."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from quartstack.app import create_app
from quartstack.lifecycle import lifecycle
from quartstack.settings import load_settings
from tests.support.net import free_port
from tests.support.polling import wait_until_sync

STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
DROPPED = ("Permissions-Policy", "X-Permitted-Cross-Domain-Policies", "Server")


def _app(**settings):
    app = create_app(load_settings(rate_limit_enabled=False, **settings))

    @app.get("/_test/cached")
    async def cached():
        return {"ok": True}, 200, {"Cache-Control": "public, max-age=60"}

    @app.get("/_test/expires")
    async def expires():
        return {"ok": True}, 200, {"Expires": "Thu, 01 Jan 2037 00:00:00 GMT"}

    return app


async def _get(app, path, *, peer="127.0.0.1", **kw):
    async with app.test_app() as test_app:
        await lifecycle(app).wait_started()
        client = test_app.test_client()
        return await client.get(path, scope_base={"client": (peer, 40000)}, **kw)


def _assert_common(headers) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    for name in DROPPED:
        assert name not in headers


async def test_plain_http_gets_the_json_api_set_without_hsts():
    response = await _get(_app(), "/health/")
    headers = response.headers
    _assert_common(headers)
    assert headers["Content-Security-Policy"] == STRICT_CSP
    assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in headers  # browsers ignore it on plain HTTP
    problem = await _get(_app(), "/nope")  # errors too
    assert problem.status_code == 404
    _assert_common(problem.headers)
    assert problem.headers["Cache-Control"] == "no-store"


async def test_hsts_over_tls_but_never_in_debug():
    response = await _get(_app(), "/health/", scheme="https")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    _assert_common(response.headers)
    debug = await _get(_app(debug=True), "/health/", scheme="https")
    assert "Strict-Transport-Security" not in debug.headers


async def test_forwarded_proto_counts_only_from_a_trusted_proxy():
    app = _app(trusted_proxies=["10.0.0.0/8"])
    https = {"X-Forwarded-Proto": "https"}
    proxied = await _get(app, "/health/", peer="10.1.2.3", headers=https)
    assert "Strict-Transport-Security" in proxied.headers
    direct = await _get(app, "/health/", peer="192.0.2.9", headers=https)
    assert "Strict-Transport-Security" not in direct.headers
    # a list: the value the nearest (trusted) proxy appended counts
    downgraded = await _get(
        app, "/health/", peer="10.1.2.3", headers={"X-Forwarded-Proto": "https, http"}
    )
    assert "Strict-Transport-Security" not in downgraded.headers
    untrusting = await _get(_app(), "/health/", peer="10.1.2.3", headers=https)
    assert "Strict-Transport-Security" not in untrusting.headers


async def test_no_store_only_where_the_response_sets_no_caching():
    app = _app()
    cached = await _get(app, "/_test/cached")
    assert cached.headers.get_all("Cache-Control") == ["public, max-age=60"]
    expires = await _get(app, "/_test/expires")
    assert "Cache-Control" not in expires.headers
    assert expires.headers["Expires"].startswith("Thu, 01 Jan 2037")


async def test_docs_pages_keep_their_relaxed_csp():
    response = await _get(_app(), "/docs")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
    _assert_common(response.headers)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A real Hypercorn serving quartstack over TLS and, on a second port, plain HTTP,
    with loopback as a trusted proxy."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    tls_port, plain_port = free_port(), free_port()
    env = {**os.environ, "RATE_LIMIT_ENABLED": "false", "TRUSTED_PROXIES": "127.0.0.1"}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "hypercorn", "quartstack.asgi:app"),
            *("--certfile", str(cert), "--keyfile", str(key)),
            *("--bind", f"127.0.0.1:{tls_port}", "--insecure-bind", f"127.0.0.1:{plain_port}"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    urls = (f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}")

    def live() -> bool:
        assert process.poll() is None, "hypercorn exited"
        try:
            return all(
                httpx.get(url + "/health/live", verify=False, timeout=1).status_code == 200
                for url in urls
            )
        except httpx.HTTPError:
            return False

    try:
        wait_until_sync(live, timeout=30, what="hypercorn answering on both ports")
        yield urls
    finally:
        process.terminate()
        process.wait(10)


def test_a_real_tls_socket_and_a_trusted_proxy_get_hsts(tls_server):
    tls_url, plain_url = tls_server
    over_tls = httpx.get(tls_url + "/health/", verify=False)
    assert over_tls.headers["Strict-Transport-Security"].startswith("max-age=")
    assert over_tls.headers["Cache-Control"] == "no-store"
    plain = httpx.get(plain_url + "/health/")
    assert "Strict-Transport-Security" not in plain.headers
    proxied = httpx.get(plain_url + "/health/", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" in proxied.headers
