"""Hostile input against a real ``quartstack serve`` over raw sockets: smuggling shapes,
broken framing, oversized heads, invalid UTF-8, huge numbers, deep nesting. Each gets a
4xx (a problem+json body whenever the app answers) or the connection closed where HTTP
requires it, and the server keeps serving."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.rabbitmq.broker import rabbitmqctl
from tests.support.process import SERVERS, ServiceProcess
from tests.support.raw_http import exchange

PROBLEM = "application/problem+json"
JSON = b"Content-Type: application/json\r\n"
# Every body sent here is refused; the unique name keeps a regression off shared queues.
QUEUE = f"hostile-{uuid.uuid4().hex[:10]}".encode()
PUBLISH = b"POST /examples/messaging/publish?queue_name=" + QUEUE + b" HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module", params=SERVERS)
def server(request):
    env = {
        "RATE_LIMIT_ENABLED": "false",
        "RABBITMQ_HOST": "127.0.0.1",
        "REDIS_HOST": "127.0.0.1",
    }
    try:
        with ServiceProcess(env, server=request.param) as process:
            process.wait_live().wait_started()
            yield process
    finally:  # only a regression publishes; never leave its queue on the shared broker
        rabbitmqctl("delete_queue", QUEUE.decode(), check=False)


@pytest.fixture(autouse=True)
def still_serving(server):
    yield
    assert httpx.get(server.url + "/health/", timeout=10).status_code == 200


def _body(payload: bytes, content: bytes) -> bytes:
    return payload + JSON + b"Content-Length: %d\r\n\r\n" % len(content) + content


# --- request smuggling -----------------------------------------------------------------
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def test_content_length_with_transfer_encoding_is_400_and_the_connection_closes(server):
    payload = (
        b"POST /examples/messaging/publish?queue_name=q HTTP/1.1\r\nHost: x\r\n"
        + JSON
        + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLED
    )
    result = exchange(server.port, payload, wait_close=5)
    assert result.status == 400 and result.content_type == PROBLEM
    assert b"/problems/ambiguous-framing" in result.responses[0].body
    assert result.closed and len(result.responses) == 1  # the smuggled GET is never served


def test_transfer_encoding_on_http_1_0_is_400_and_the_connection_closes(server):
    payload = b"POST /health/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
    result = exchange(server.port, payload, wait_close=5)
    assert result.status == 400 and result.closed and len(result.responses) == 1


# Refused by Hypercorn's h11 parser before the app: an empty response, then closed.
# Unknown transfer codings are 501 as RFC 9112 6.1 asks ("SHOULD respond with 501").
FRAMING = {
    "two different Content-Length": (b"Content-Length: 5\r\nContent-Length: 6\r\n", {400}),
    "Content-Length list": (b"Content-Length: 5, 6\r\n", {400}),
    "negative Content-Length": (b"Content-Length: -1\r\n", {400}),
    "signed Content-Length": (b"Content-Length: +5\r\n", {400}),
    "Content-Length of 26 digits": (b"Content-Length: " + b"9" * 26 + b"\r\n", {400}),
    "space before the colon": (b"Transfer-Encoding : chunked\r\n", {400}),
    "TE xchunked": (b"Transfer-Encoding: xchunked\r\n", {501}),
    "TE gzip, chunked": (b"Transfer-Encoding: gzip, chunked\r\n", {501}),
    "TE chunked, identity": (b"Transfer-Encoding: chunked, identity\r\n", {501}),
    "TE twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", {501}),
    "CL and obfuscated TE": (
        b"Content-Length: 5\r\nTransfer-Encoding: x chunked\r\n",
        {400, 501},
    ),
}


@pytest.mark.parametrize(("headers", "statuses"), FRAMING.values(), ids=FRAMING.keys())
def test_ambiguous_or_malformed_framing_is_refused_and_closed(server, headers, statuses):
    payload = PUBLISH + JSON + headers + b"\r\n" + b"hello!0\r\n\r\n" + SMUGGLED
    result = exchange(server.port, payload, wait_close=5)
    assert result.status in statuses
    assert result.closed and len(result.responses) == 1


# --- malformed and oversized heads ------------------------------------------------------
HEADS = {
    "no Host on HTTP/1.1": (b"GET /health/ HTTP/1.1\r\n\r\n", {400}),
    "two Host headers": (b"GET /health/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    "space in a header name": (b"GET /health/ HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n", {400}),
    "NUL in a header value": (b"GET /health/ HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    "header line without colon": (b"GET /health/ HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", {400}),
    "garbage request line": (b"\x00\x01\x02 garbage\r\n\r\n", {400}),
    "TLS ClientHello": (b"\x16\x03\x01\x00\xa5garbage\r\n\r\n", {400}),
    "raw non-ASCII path": (b"GET /examples/cache/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "raw non-ASCII query": (b"GET /health/?a=\xff HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "bad chunk size": (PUBLISH + JSON + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n", {400}),
}


@pytest.mark.parametrize(("payload", "statuses"), HEADS.values(), ids=HEADS.keys())
def test_malformed_heads_are_refused(server, payload, statuses):
    result = exchange(server.port, payload, wait_close=5)
    assert result.status in statuses
    assert result.closed


def test_headers_over_16_kib_in_one_read_are_431_problem(server):
    # 60 KiB fit in one read: Hypercorn's own limit never triggers for them.
    payload = b"GET /health/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n"
    result = exchange(server.port, payload)
    assert result.status == 431 and result.content_type == PROBLEM
    assert b"/problems/headers-too-large" in result.responses[0].body


def test_a_path_over_16_kib_is_431(server):
    result = exchange(server.port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert result.status == 431 and result.content_type == PROBLEM


def test_headers_over_64_kib_are_refused_by_the_server(server):
    payload = b"GET /health/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    result = exchange(server.port, payload, wait_close=5)
    assert result.closed
    assert not result.responses or result.status == 431


# --- invalid UTF-8, names, numbers -------------------------------------------------------
APP_ANSWERS = {
    "percent-escaped non-UTF-8 in the path": (
        b"GET /examples/cache/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "invalid-encoding",
    ),
    "percent-escaped non-UTF-8 in the query": (
        b"POST /examples/cache/hostile-k?value=%ff%fe HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 0\r\n\r\n",
        400,
        "invalid-encoding",
    ),
    "truncated UTF-8 sequence in the query": (
        b"GET /health/?a=%c3 HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "invalid-encoding",
    ),
    "queue name ..": (
        b"GET /examples/messaging/queue/%2E%2E/info HTTP/1.1\r\nHost: x\r\n\r\n",
        422,
        "validation-error",
    ),
    "queue name .": (
        b"GET /examples/messaging/queue/./info HTTP/1.1\r\nHost: x\r\n\r\n",
        422,
        "validation-error",
    ),
    "publish to queue ..": (
        _body(
            b"POST /examples/messaging/publish?queue_name=.. HTTP/1.1\r\nHost: x\r\n", b'{"a":1}'
        ),
        422,
        "validation-error",
    ),
    "ttl of 30 digits": (
        b"POST /examples/cache/hostile-k?value=v&ttl=" + b"9" * 30 + b" HTTP/1.1\r\n"
        b"Host: x\r\nContent-Length: 0\r\n\r\n",
        422,
        "validation-error",
    ),
    "ttl of 5000 digits": (
        b"POST /examples/cache/hostile-k?value=v&ttl=" + b"9" * 5000 + b" HTTP/1.1\r\n"
        b"Host: x\r\nContent-Length: 0\r\n\r\n",
        422,
        "validation-error",
    ),
    "ttl 1e400": (
        b"POST /examples/cache/hostile-k?value=v&ttl=1e400 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 0\r\n\r\n",
        422,
        "validation-error",
    ),
    "JSON nested 1000 deep": (_body(PUBLISH, b"[" * 1000 + b"]" * 1000), 400, "malformed-json"),
    "JSON nested 50000 deep": (
        _body(PUBLISH, b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        400,
        "malformed-json",
    ),
    "JSON not UTF-8": (_body(PUBLISH, b'{"a": "\xff\xfe"}'), 400, "malformed-json"),
    "JSON lone surrogate": (_body(PUBLISH, b'{"a": "\\ud800"}'), 400, "malformed-json"),
    "JSON NaN": (_body(PUBLISH, b'{"a": NaN}'), 400, "malformed-json"),
    "JSON -Infinity": (_body(PUBLISH, b'{"a": -Infinity}'), 400, "malformed-json"),
    "JSON 1e400": (_body(PUBLISH, b'{"a": 1e400}'), 400, "malformed-json"),
    "JSON 5000-digit integer": (
        _body(PUBLISH, b'{"a": ' + b"7" * 5000 + b"}"),
        400,
        "malformed-json",
    ),
    "JSON body over the publish limit": (
        _body(PUBLISH, b'{"a": "' + b"x" * (1024 * 1024) + b'"}'),
        413,
        "payload-too-large",
    ),
}


@pytest.mark.parametrize(
    ("payload", "status", "kind"), APP_ANSWERS.values(), ids=APP_ANSWERS.keys()
)
def test_hostile_values_get_a_4xx_problem(server, payload, status, kind):
    result = exchange(server.port, payload)
    assert result.status == status, result.responses[0].body[:300]
    assert result.content_type == PROBLEM
    assert f"/problems/{kind}".encode() in result.responses[0].body


def test_an_unknown_method_is_refused(server):
    """Hypercorn's h11 passes any token as a method and the app answers 405 (with
    ``Allow``); uvicorn's llhttp knows a fixed list and refuses the rest as malformed
    (400, closed) before any app could list the allowed methods."""
    result = exchange(server.port, b"FOO /health/ HTTP/1.1\r\nHost: x\r\n\r\n", wait_close=5)
    assert result.content_type == PROBLEM
    if server.server == "uvicorn":
        assert result.status == 400 and result.closed
        assert b"/problems/bad-request" in result.responses[0].body
    else:
        assert result.status == 405 and "GET" in result.responses[0].headers["allow"]
        assert b"/problems/method-not-allowed" in result.responses[0].body


def _other_method_requests(server) -> float:
    """``http_requests_total`` of unregistered methods answered 405 so far."""
    exposition = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels == {
                "method": "_OTHER",
                "endpoint": "<unmatched>",
                "status": "405",
            }:
                return sample.value
    return 0.0


def test_unknown_methods_add_no_metric_series(server):
    """Each new method token a client invents must not become a new metric series (and
    memory without bound): the method label is ``_OTHER`` for any unregistered one."""
    tokens = [f"X{uuid.uuid4().hex[:8].upper()}" for _ in range(5)]
    before = _other_method_requests(server)
    for token in tokens:
        request = f"{token} /health/ HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert exchange(server.port, request, wait_close=5).status in (400, 405)
    exposition = httpx.get(server.url + "/metrics", timeout=10).text
    assert not [token for token in tokens if token in exposition]
    # Hypercorn hands them to the app (405), counted as _OTHER; uvicorn refuses them first.
    expected = len(tokens) if server.server == "hypercorn" else 0
    assert _other_method_requests(server) == before + expected


def test_hostile_requests_pipelined_on_one_connection_are_each_answered(server):
    payload = (
        _body(PUBLISH, b'{"a": NaN}')
        + b"GET /examples/messaging/queue/%2E%2E/info HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /health/?a=%ff HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /health/ HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    result = exchange(server.port, payload, responses=4)
    assert [r.status for r in result.responses] == [400, 422, 400, 200]
    assert not result.closed
