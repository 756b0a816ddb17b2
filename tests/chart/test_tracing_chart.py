"""The chart's tracing values: OTEL_* in the ConfigMap only when an endpoint is set, the
pod and namespace from the downward API, the collector's port in the egress policy, the
scrape protocols; and the dev stack's Jaeger wired to the dev values and skaffold."""

from __future__ import annotations

import yaml

from tests.chart.conftest import CHART, ROOT, VALUES_FILES, find, kubectl, render


def _env(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container.get("env", [])}


def test_tracing_is_off_by_default_but_pods_know_their_names(rendered_defaults):
    config = find(rendered_defaults, "ConfigMap")["data"]
    assert not [key for key in config if key.startswith("OTEL_")]
    env = _env(find(rendered_defaults, "Deployment"))
    assert env["K8S_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["K8S_NAMESPACE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "OTEL_SERVICE_NAME" not in env  # the app's own default name


def test_tracing_values_become_the_standard_variables(rendered_all_on):
    config = find(rendered_all_on, "ConfigMap", "quartstack")["data"]
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert config["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment.name=ci"
    api = _env(find(rendered_all_on, "Deployment", "quartstack"))
    assert api["OTEL_SERVICE_NAME"]["value"] == "quartstack-ci"
    policy = find(rendered_all_on, "NetworkPolicy")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert 4318 in ports
    monitor = find(rendered_all_on, "ServiceMonitor", "quartstack")
    assert monitor["spec"]["scrapeProtocols"][0] == "OpenMetricsText1.0.0"


def test_the_worker_is_a_service_of_its_own():
    documents = render(*VALUES_FILES["everything-on"], sets=("worker.enabled=true",))
    worker = _env(find(documents, "Deployment", "-worker"))
    assert worker["OTEL_SERVICE_NAME"]["value"] == "quartstack-ci-worker"
    assert worker["K8S_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_dev_values_send_traces_to_the_dev_stacks_jaeger():
    stack = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "k8s")).stdout) if d]
    jaeger = next(d for d in stack if d["kind"] == "Service" and d["metadata"]["name"] == "jaeger")
    ports = {p["name"]: p["port"] for p in jaeger["spec"]["ports"]}
    dev = yaml.safe_load((CHART / "values-dev.yaml").read_text())
    namespace = jaeger["metadata"]["namespace"]
    assert dev["otel"]["endpoint"] == f"http://jaeger.{namespace}.svc:{ports['otlp-http']}"
    configs = [d for d in yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()) if d]
    forwarded = {(f["resourceName"], f["port"]) for c in configs for f in c.get("portForward", [])}
    assert ("jaeger", ports["ui"]) in forwarded
