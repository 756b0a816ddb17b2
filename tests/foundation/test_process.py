"""A real ``quartstack serve`` process: startup, /metrics, bad settings, SIGTERM drain,
and hostile input over raw sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.net import TcpProxy
from tests.support.polling import wait_until_sync
from tests.support.process import SERVERS, ServiceProcess
from tests.support.vault import VaultTestServer


@pytest.fixture(scope="module", params=SERVERS)
def server(request):
    env = {"RATE_LIMIT_ENABLED": "false", "RABBITMQ_HOST": "127.0.0.1"}
    with ServiceProcess(env, server=request.param) as process:
        process.wait_live().wait_started()
        yield process


def test_the_served_process_freezes_what_startup_left_alive(server):
    """quartstack.heap: the collector's full passes skip the imported modules and clients
    (their cost was most of the web layer's, and a 50 ms p95)."""

    def startup_line() -> dict[str, object] | None:
        for line in server.log_lines():
            if '"startup complete"' in line:
                entry: dict[str, object] = json.loads(line)
                return entry
        return None

    entry = wait_until_sync(startup_line, what="the startup complete line")
    frozen = entry["frozen_objects"]
    assert isinstance(frozen, int) and frozen > 50_000  # the whole app, not a handful


def test_startup_and_a_real_metrics_scrape(server):
    assert httpx.get(server.url + "/health/startup").json() == {"status": "started"}
    httpx.get(server.url + "/")
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'app_info{name="quartstack"' in text
    assert 'http_requests_total{endpoint="/",method="GET",status="200"}' in text
    assert "# TYPE circuit_breaker_state gauge" in text
    assert "server" not in {k.lower() for k in response.headers}
    lines = [line for line in server.log_lines() if '"quartstack.access"' in line]
    assert lines and all(line.startswith("{") for line in lines)


def test_forwarded_headers_are_ignored_without_trusted_proxies(server):
    """The server's own proxy-header handling is off (uvicorn's is on by default for
    127.0.0.1): with TRUSTED_PROXIES empty the client is the peer, whatever it claims."""
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    response = httpx.get(server.url + "/", headers={**forged, "X-Request-ID": "forged-xff"})
    assert response.status_code == 200

    def access_line() -> str | None:
        return next(
            (line for line in server.log_lines() if '"forged-xff"' in line and "access" in line),
            None,
        )

    _poll(lambda: access_line() is not None, "the access log line")
    line = json.loads(access_line() or "")
    assert line["client"] == "127.0.0.1", line


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("PORT", "not-a-port", "PORT"),
        ("REQUIRED_BACKENDS", "postgres,oracle", "REQUIRED_BACKENDS"),
        ("POSTGRES_PORT", "s3cr3t-looking-value", "POSTGRES_PORT"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal", "TRUSTED_PROXIES"),
    ],
)
def test_bad_setting_stops_startup_with_one_clear_line(name, value, reason):
    env = {**os.environ, name: value}
    result = subprocess.run(
        [sys.executable, "-m", "quartstack", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert reason in lines[0] and lines[0].startswith("quartstack: invalid setting")
    assert value not in lines[0]


def test_a_required_backend_that_is_not_configured_stops_startup():
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("REDIS_", "VAULT_"))}
    result = subprocess.run(
        [sys.executable, "-m", "quartstack", "serve"],
        env={**env, "REQUIRED_BACKENDS": "redis"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "quartstack: invalid setting REQUIRED_BACKENDS: names backends that are not configured "
        "(redis needs REDIS_HOST or REDIS_NODES)"
    )


def _poll(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout} s")
        time.sleep(0.05)


def _in_progress(process: ServiceProcess, endpoint: str) -> float:
    """``http_requests_in_progress`` of one GET route, from a real scrape."""
    text = httpx.get(process.url + "/metrics", timeout=5).text
    prefix = f'http_requests_in_progress{{endpoint="{endpoint}",method="GET"}} '
    line = next((line for line in text.splitlines() if line.startswith(prefix)), None)
    return 0.0 if line is None else float(line[len(prefix) :])


def _call_in_thread(
    url: str, headers: dict[str, str] | None = None
) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["response"] = httpx.get(url, headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, result


@pytest.mark.parametrize("http_server", SERVERS)
def test_sigterm_drains_in_flight_requests(http_server):
    with TcpProxy(6379) as proxy:
        env = {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(proxy.port),
            "RATE_LIMIT_ENABLED": "false",
            "SHUTDOWN_GRACE_SECONDS": "15",
            "SHUTDOWN_DRAIN_SECONDS": "0.5",
        }
        process = ServiceProcess(env, server=http_server).start()
        try:
            process.wait_started()
            assert httpx.get(process.url + "/examples/cache/drain-key").status_code == 200
            proxy.set_mode("delay", 2.5)
            thread, slow = _call_in_thread(process.url + "/examples/cache/drain-key")
            _poll(lambda: _in_progress(process, "/examples/cache/{key}") > 0, "the slow request")
            process.send_signal(signal.SIGTERM)
            _poll(
                lambda: httpx.get(process.url + "/health/ready", timeout=5).status_code == 503,
                "readiness 503",
            )
            ready = httpx.get(process.url + "/health/ready", timeout=5)
            assert ready.json()["checks"]["shutdown"] == "draining"
            thread.join(20)
            response = slow["response"]
            assert isinstance(response, httpx.Response)
            assert response.status_code == 200
            assert response.json()["key"] == "drain-key"
            assert process.process is not None
            assert process.process.wait(20) == 0
        finally:
            process.terminate()
        logs = "\n".join(process.log_lines())
        assert "draining: readiness is now 503" in logs and "drain finished" in logs


@pytest.mark.parametrize("http_server", SERVERS)
def test_sigterm_budget_holds_when_a_request_outlives_the_grace(tmp_path, http_server):
    """drain + grace + close is the whole shutdown: a request stuck on a backend past the
    grace is answered 503 (not Hypercorn's empty 500), the process exits 0 within the
    budget, and its AppRole token is revoked in Vault."""
    drain, grace, close = 0.5, 1.5, 3.0
    with VaultTestServer() as vault, TcpProxy(6379) as proxy:
        env = {
            "VAULT_ADDR": vault.url,
            "VAULT_APPROLE_DIR": str(vault.approle_dir(tmp_path / "approle", "budget")),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(proxy.port),
            "RATE_LIMIT_ENABLED": "false",
            "BACKEND_TIMEOUT_SECONDS": "60",  # the request really outlives the grace
            "SHUTDOWN_DRAIN_SECONDS": str(drain),
            "SHUTDOWN_GRACE_SECONDS": str(grace),
            "SHUTDOWN_CLOSE_SECONDS": str(close),
        }
        before = vault.token_accessors()
        process = ServiceProcess(env, server=http_server).start()
        try:
            process.wait_started()
            app_tokens = vault.token_accessors() - before
            assert app_tokens, "the service logged in to Vault"
            assert httpx.get(process.url + "/examples/cache/budget-key").status_code == 200
            proxy.set_mode("delay", 60)
            thread, slow = _call_in_thread(
                process.url + "/examples/cache/budget-key", {"X-Request-ID": "cut-at-grace"}
            )
            _poll(lambda: _in_progress(process, "/examples/cache/{key}") > 0, "the slow request")
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.process is not None
            assert process.process.wait(30) == 0
            took = time.monotonic() - signalled
            thread.join(10)
        finally:
            process.terminate()
        assert took <= drain + grace + close + 1.0, took  # 1 s: interpreter exit, scheduling
        response = slow.get("response")
        assert isinstance(response, httpx.Response), slow
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/shutting-down"
        assert response.json()["request_id"] == response.headers["x-request-id"] == "cut-at-grace"
        assert response.headers["connection"] == "close"
        assert not app_tokens & vault.token_accessors(), "the token is still valid in Vault"
        logs = "\n".join(process.log_lines())
        assert "vault token revoked" in logs
        assert "Traceback" not in logs and "pending" not in logs  # a clean stop


def _raw(server: ServiceProcess, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"server hung on {payload[:60]!r}") from None
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in payload:
                data = b"".join(chunks)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET /examples/cache/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", {422, 400, 404}),
        (b"GET /examples/cache/%zz HTTP/1.1\r\nHost: x\r\n\r\n", {422, 400, 404}),
        # 405 from the app on Hypercorn; llhttp (uvicorn) refuses unknown methods: 400
        (b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", {405, 400}),
        (
            b"POST /examples/cache/k?value=v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 5\r\n\r\n{bad}",
            {503, 400},
        ),
        (
            b"POST /examples/messaging/publish?queue_name=q HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{bad}",
            {400},
        ),
        (
            b"POST /examples/messaging/publish?queue_name=q HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/xml\r\nContent-Length: 4\r\n\r\n<a/>",
            {415},
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 99999999\r\n\r\n",
            {413},
        ),
    ],
)
def test_hostile_requests_get_a_4xx_problem_never_500(server, request_bytes, expected):
    response = _raw(server, request_bytes)
    status = _status(response)
    assert status in expected, response[:300]
    assert b"application/problem+json" in response.split(b"\r\n\r\n")[0].lower()


def test_protocol_errors_are_rejected_by_the_server_without_a_hang(server):
    """Requests HTTP/1.1 itself forbids (a non-ASCII request target, headers past
    Hypercorn's 16 KiB limit, TLS to a plain port) are refused by Hypercorn's h11 layer
    with an empty 400 before the app sees them: no problem body is possible there."""
    for payload in (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",):
        response = _raw(server, payload)
        assert _status(response) == 400


def test_huge_headers_and_garbage_are_rejected_without_a_hang(server):
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    response = _raw(server, huge)
    assert response == b"" or 400 <= _status(response) < 500
    garbage = _raw(server, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
    assert garbage == b"" or 400 <= _status(garbage) < 500
    assert httpx.get(server.url + "/health/live").status_code == 200  # still serving
