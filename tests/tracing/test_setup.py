"""When tracing turns on, what the resource says, and which attributes a backend's client
spans may carry (logic only: the process tests in test_traces.py prove the wiring)."""

from __future__ import annotations

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import sampling
from pydantic import SecretStr

from quartstack.settings import load_settings
from quartstack.tracing import client, state
from quartstack.tracing.client import backend_attributes, default_attributes, span_name
from quartstack.tracing.setup import (
    build_resource,
    configure_tracing,
    drops_children_of_unsampled,
    wanted,
)
from tests.support.otlp import Span


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint_and_not_disabled(env, on):
    assert wanted(env) is on


def test_no_endpoint_installs_nothing():
    assert configure_tracing(environ={}) is False
    assert state.active is False


def test_an_unknown_protocol_leaves_tracing_off():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "smoke"}
    assert configure_tracing(environ=env) is False
    assert state.active is False


def test_resource_defaults_and_the_standard_variables_win(monkeypatch):
    env = {"K8S_POD_NAME": "api-7d9-x2", "K8S_NAMESPACE_NAME": "prod"}
    attributes = build_resource("quartstack", env).attributes
    assert attributes["service.name"] == "quartstack"
    assert attributes["service.version"]
    assert attributes["k8s.pod.name"] == "api-7d9-x2"
    assert attributes["service.instance.id"] == "api-7d9-x2"
    assert attributes["k8s.namespace.name"] == "prod"
    # the SDK's own detector reads the process environment
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    attributes = build_resource("quartstack", {}).attributes
    assert attributes["service.name"] == "billing"
    assert attributes["deployment.environment.name"] == "prod"
    assert "k8s.pod.name" not in attributes


def test_backend_attributes_come_from_addresses_never_from_credentials():
    settings = load_settings(
        vault_addr="https://vault.example:8200",
        vault_token=SecretStr("hvs.never-in-a-span"),
        postgres_host="db.example",
        postgres_port=6432,
        postgres_database="orders",
        postgres_password=SecretStr("pg-never-in-a-span"),
        rabbitmq_host="mq.example",
        redis_host="cache.example",
    )
    postgres = backend_attributes("postgres", settings)
    assert postgres == {
        "db.system.name": "postgresql",
        "db.namespace": "orders",
        "server.address": "db.example",
        "server.port": 6432,
    }
    assert span_name("postgres", "query", postgres) == "query orders"
    vault = backend_attributes("vault", settings)
    assert vault["server.address"] == "vault.example" and vault["server.port"] == 8200
    assert vault["quartstack.backend"] == "vault"
    assert backend_attributes("rabbitmq", settings)["messaging.system"] == "rabbitmq"
    assert backend_attributes("redis", settings)["db.system.name"] == "redis"
    assert default_attributes("redis:redis-2")["db.system.name"] == "redis"
    everything = [
        *(backend_attributes(name, settings).values() for name in ("vault", "postgres", "redis"))
    ]
    assert not any("never-in-a-span" in str(v) for values in everything for v in values)


def test_the_span_scan_sees_every_string():
    """The secret scan of test_traces.py looks at names, attributes, resources, events."""
    span = Span(
        name="n",
        kind="client",
        trace_id="0" * 32,
        span_id="1" * 16,
        parent_span_id="",
        attributes={"a": ["x", {"deep": "secret-in-attr"}]},
        status="error",
        status_message="secret-in-status",
        resource={"r": "secret-in-resource"},
        scope="s",
        start_ns=0,
        end_ns=1,
        events=({"name": "exception", "exception.message": "secret-in-event"},),
    )
    text = "\n".join(span.all_strings())
    for where in ("attr", "status", "resource", "event"):
        assert f"secret-in-{where}" in text


@pytest.mark.parametrize(
    ("sampler", "drops"),
    [
        (sampling.DEFAULT_ON, True),  # parentbased_always_on, the default
        (sampling.ParentBased(sampling.TraceIdRatioBased(0.1)), True),
        (sampling.ParentBased(sampling.ParentBased(sampling.ALWAYS_ON)), True),
        (
            sampling.ParentBased(sampling.ALWAYS_ON, local_parent_not_sampled=sampling.ALWAYS_ON),
            False,
        ),
        (
            sampling.ParentBased(
                sampling.ParentBased(sampling.ALWAYS_ON),  # the nested one drops; the outer not
                local_parent_not_sampled=sampling.ALWAYS_ON,
            ),
            False,
        ),
        (sampling.ALWAYS_ON, False),  # not parent-based: children of anything are sampled
        (sampling.TraceIdRatioBased(0.5), False),
    ],
)
def test_children_of_unsampled_requests_are_skipped_only_where_the_sampler_drops_them(
    sampler, drops
):
    assert drops_children_of_unsampled(sampler) is drops


@pytest.mark.parametrize(
    ("flag", "sampled", "remote", "wanted_"),
    [
        (True, False, False, False),  # inside a sampled-out request: no client span
        (True, True, False, True),
        (True, False, True, True),  # a remote parent: the sampler decides (remote rules)
        (False, False, False, True),  # a sampler that may keep such children
    ],
)
def test_a_backend_call_in_a_sampled_out_request_starts_no_span(
    monkeypatch, flag, sampled, remote, wanted_
):
    monkeypatch.setattr(state, "children_of_unsampled_dropped", flag)
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    parent = trace.NonRecordingSpan(
        trace.SpanContext(0x1234, 0x5678, is_remote=remote, trace_flags=flags)
    )
    token = context.attach(trace.set_span_in_context(parent))
    try:
        assert client.wanted("query") is wanted_
        assert client.wanted("health") is False  # background noise: never outside a recording span
    finally:
        context.detach(token)
    assert client.wanted("query") is True  # no request span at all: a root span
