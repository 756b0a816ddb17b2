"""Traces of a real ``quartstack serve`` process, exported over OTLP/HTTP to a real
receiver (tests/support/otlp.py): the span tree of a request, the traceparent trust
rule, log and metric correlation, no secret in any span, and no traffic when off."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.leftovers import unique_name
from tests.support.otlp import OtlpReceiver
from tests.support.polling import wait_until_sync
from tests.support.process import ServiceProcess
from tests.support.vault import VaultTestServer, kv_read_policy

QUERY = "/examples/database/postgres/query"
ROUTE = f"GET {QUERY}"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "RATE_LIMIT_ENABLED": "false"}


def _clean_env(**env: str) -> dict[str, str]:
    """The process environment without any OTEL_* of the machine, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**base, **FAST_EXPORT, **env}


class Traced:
    def __init__(self, process: ServiceProcess, receiver: OtlpReceiver, secrets_: list[str]):
        self.process = process
        self.receiver = receiver
        self.secrets = secrets_


@pytest.fixture(scope="module")
def traced(vault_server: VaultTestServer) -> Iterator[Traced]:
    """A service with Vault (token + KV secret of its own) and PostgreSQL, tracing to a
    receiver; the secrets Vault holds for it are the ones no span may contain."""
    mount = unique_name("-")
    vault_server.enable_kv_v2(mount)
    password = "pw-" + secrets.token_hex(16)
    vault_server.write_secret(
        "postgres", {"user": "postgres", "password": password, "database": "postgres"}, mount=mount
    )
    policy = unique_name("-")
    vault_server.write_policy(policy, kv_read_policy(["postgres"], mount=mount))
    token = vault_server.create_token(ttl=600, policies=[policy])
    with OtlpReceiver() as receiver:
        env = _clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            K8S_POD_NAME="quartstack-test-pod",
            K8S_NAMESPACE_NAME="tracing-test",
            VAULT_ADDR=vault_server.url,
            VAULT_TOKEN=token,
            VAULT_MOUNT=mount,
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_DATABASE="postgres",
            REQUIRED_BACKENDS="postgres",
            READINESS_INTERVAL_SECONDS="0.2",
        )
        with ServiceProcess(env) as process:
            process.wait_started()
            yield Traced(process, receiver, [token, password])


def _access_line(process: ServiceProcess, request_id: str) -> dict[str, object]:
    def find() -> dict[str, object] | None:
        for raw in process.log_lines():
            if request_id in raw and '"request"' in raw:
                line: dict[str, object] = json.loads(raw)
                if line.get("request_id") == request_id and line.get("message") == "request":
                    return line
        return None

    return wait_until_sync(find, what=f"the access line of {request_id}")


def test_request_span_tree_server_to_postgres(traced: Traced) -> None:
    request_id = "trace-" + secrets.token_hex(6)
    response = httpx.get(
        traced.process.url + QUERY + "?token=query-value-must-not-appear",
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.text
    line = _access_line(traced.process, request_id)
    trace_id, span_id = str(line["trace_id"]), str(line["span_id"])

    server = traced.receiver.wait_for_span(
        lambda s: s.trace_id == trace_id and s.kind == "server", what="the server span"
    )
    assert server.span_id == span_id  # the access line was logged inside the server span
    assert server.name == ROUTE
    assert server.parent_span_id == ""
    assert server.status != "error"
    attrs = server.attributes
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == QUERY
    assert attrs["url.path"] == QUERY
    assert attrs["http.response.status_code"] == 200
    assert attrs["client.address"] == "127.0.0.1"
    assert attrs["server.address"] == "127.0.0.1"
    assert "url.query" not in attrs and "url.full" not in attrs
    assert server.service == "quartstack"
    assert server.resource["k8s.pod.name"] == "quartstack-test-pod"
    assert server.resource["k8s.namespace.name"] == "tracing-test"
    assert server.resource["service.version"]

    postgres = traced.receiver.wait_for_span(
        lambda s: s.trace_id == trace_id and s.attributes.get("db.system.name") == "postgresql",
        what="the postgres client span",
    )
    assert postgres.kind == "client"
    assert postgres.parent_span_id == server.span_id, traced.receiver.tree(trace_id)
    assert postgres.name == "query postgres"
    assert postgres.attributes["db.operation.name"] == "query"
    assert postgres.attributes["db.namespace"] == "postgres"
    assert postgres.attributes["server.address"] == "127.0.0.1"
    assert postgres.attributes["server.port"] == 5432
    assert postgres.status != "error"
    for text in traced.receiver.all_strings():
        assert "query-value-must-not-appear" not in text


def test_unmatched_route_and_server_error_status(traced: Traced) -> None:
    response = httpx.get(traced.process.url + "/no/such/" + secrets.token_hex(4))
    assert response.status_code == 404
    span = traced.receiver.wait_for_span(
        lambda s: s.kind == "server" and str(s.attributes.get("url.path", "")).startswith("/no/")
    )
    assert span.name == "GET"  # never the raw path
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404
    assert span.status != "error"  # a 4xx is the client's error, not the server's


def test_untrusted_traceparent_is_not_continued(traced: Traced) -> None:
    incoming_trace, incoming_span = secrets.token_hex(16), secrets.token_hex(8)
    request_id = "untrusted-" + secrets.token_hex(6)
    httpx.get(
        traced.process.url + "/",
        headers={
            "traceparent": f"00-{incoming_trace}-{incoming_span}-01",
            "X-Request-ID": request_id,
        },
    )
    line = _access_line(traced.process, request_id)
    span = traced.receiver.wait_for_span(lambda s: s.span_id == line["span_id"])
    assert span.trace_id != incoming_trace
    assert span.parent_span_id == ""


def test_metrics_carry_exemplars_in_openmetrics_only(traced: Traced) -> None:
    request_id = "exemplar-" + secrets.token_hex(6)
    httpx.get(traced.process.url + QUERY, headers={"X-Request-ID": request_id})
    trace_id = _access_line(traced.process, request_id)["trace_id"]
    scrape = httpx.get(
        traced.process.url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    buckets = [
        line
        for line in scrape.text.splitlines()
        if line.startswith("http_request_duration_seconds_bucket") and QUERY in line
    ]
    assert any(f'trace_id="{trace_id}"' in line for line in buckets), buckets
    plain = httpx.get(traced.process.url + "/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "trace_id=" not in plain.text


def test_no_span_contains_a_secret_issued_by_vault(traced: Traced) -> None:
    httpx.get(traced.process.url + QUERY)
    vault = traced.receiver.wait_for_span(
        lambda s: s.attributes.get("quartstack.backend") == "vault",
        what="a client span of a Vault call",
    )
    assert vault.kind == "client"
    strings = list(traced.receiver.all_strings())
    assert strings
    for secret in traced.secrets:
        leaks = [text for text in strings if secret in text]
        assert not leaks, f"a span carries a secret: {leaks}"


def test_background_health_checks_are_not_traced(traced: Traced) -> None:
    def health_checks() -> float:
        for line in httpx.get(traced.process.url + "/metrics").text.splitlines():
            if line.startswith("backend_call_duration_seconds_count{") and all(
                label in line for label in ('operation="health"', 'service="postgres"')
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    wait_until_sync(lambda: health_checks() >= 3, what="three background health checks")
    traced.receiver.wait_for_span(lambda s: s.name == "query postgres")  # export works
    rooted = traced.receiver.find(
        lambda s: s.attributes.get("db.operation.name") == "health" and not s.parent_span_id
    )
    assert not rooted


# --- the trust rule and the off switch: processes of their own -------------------------


def test_traceparent_from_a_trusted_proxy_is_continued() -> None:
    incoming_trace, incoming_span = secrets.token_hex(16), secrets.token_hex(8)
    with OtlpReceiver() as receiver:
        env = _clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, TRUSTED_PROXIES="127.0.0.1/32"
        )
        with ServiceProcess(env) as process:
            process.wait_live()
            httpx.get(
                process.url + "/",
                headers={
                    "traceparent": f"00-{incoming_trace}-{incoming_span}-01",
                    "X-Forwarded-For": "203.0.113.7",
                },
            )
            span = receiver.wait_for_span(
                lambda s: s.kind == "server" and s.trace_id == incoming_trace,
                what="the server span continuing the incoming trace",
            )
    assert span.parent_span_id == incoming_span
    assert span.attributes["client.address"] == "203.0.113.7"


def test_a_sampled_out_request_exports_no_span_and_a_sampled_one_its_whole_tree() -> None:
    """The parent's decision rules every span of the request (the default parent-based
    sampler): a backend call inside a sampled-out request starts no span of its own."""
    dropped, kept = secrets.token_hex(16), secrets.token_hex(16)
    with OtlpReceiver() as receiver:
        env = _clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            TRUSTED_PROXIES="127.0.0.1/32",
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_USER="postgres",
            POSTGRES_DATABASE="postgres",
        )
        with ServiceProcess(env) as process:
            process.wait_started()
            for trace_id, flags in ((dropped, "00"), (kept, "01")):
                parent = f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
                response = httpx.get(process.url + QUERY, headers={"traceparent": parent})
                assert response.status_code == 200
            server = receiver.wait_for_span(
                lambda s: s.kind == "server" and s.trace_id == kept, what="the sampled request"
            )
            receiver.wait_for_span(
                lambda s: s.kind == "client" and s.parent_span_id == server.span_id,
                what="its postgres span",
            )
            assert _flush_and_count(process, receiver, dropped) == 0


def _flush_and_count(process: ServiceProcess, receiver: OtlpReceiver, trace_id: str) -> int:
    """Spans of ``trace_id`` received once the process stopped (a clean stop flushes)."""
    assert process.terminate() == 0
    return len(receiver.trace(trace_id))


def test_sdk_disabled_sends_nothing_and_logs_no_trace_ids() -> None:
    with OtlpReceiver() as receiver:
        env = _clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SDK_DISABLED="true")
        process = ServiceProcess(env).start()
        try:
            process.wait_live()
            request_id = "off-" + secrets.token_hex(6)
            assert httpx.get(process.url + "/", headers={"X-Request-ID": request_id}).is_success
            line = _access_line(process, request_id)
        finally:
            assert process.terminate() == 0  # a clean stop would have flushed any span
        assert receiver.requests == []
    assert "trace_id" not in line and "span_id" not in line
    assert not any(re.search(r'"trace_id"', raw) for raw in process.log_lines())


def test_spans_left_at_sigterm_are_exported_within_the_budget() -> None:
    """A batch delay far longer than the test: only the shutdown flush can deliver it."""
    with OtlpReceiver() as receiver:
        env = _clean_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="600000",
            SHUTDOWN_DRAIN_SECONDS="0",
            SHUTDOWN_GRACE_SECONDS="1",
            SHUTDOWN_CLOSE_SECONDS="3",
        )
        process = ServiceProcess(env).start()
        try:
            process.wait_live()
            request_id = "flush-" + secrets.token_hex(6)
            httpx.get(process.url + "/", headers={"X-Request-ID": request_id})
            span_id = _access_line(process, request_id)["span_id"]
            assert not receiver.find(lambda s: s.span_id == span_id)  # still batched
        finally:
            assert process.terminate(timeout=10) == 0
        assert receiver.find(lambda s: s.span_id == span_id and s.kind == "server")
