"""The Helm chart lints, renders valid Kubernetes objects and refuses bad values."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.chart.conftest import CHART, ROOT, SHARED, VALUES_FILES, helm, render

CRD_FILES = {
    "ServiceMonitor": SHARED / "schemas" / "crd-servicemonitors.yaml",
    "PrometheusRule": SHARED / "schemas" / "crd-prometheusrules.yaml",
}


def _python_patterns(node):
    """CRD patterns are Go regexes: move inline flags like (?i) to the front for Python."""
    if isinstance(node, dict):
        return {
            key: (
                f"(?i){value.replace('(?i)', '')}"
                if key == "pattern" and isinstance(value, str) and "(?i)" in value
                else _python_patterns(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_python_patterns(item) for item in node]
    return node


def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = next(d for d in yaml.safe_load_all(CRD_FILES[kind].read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_python_patterns(version["schema"]["openAPIV3Schema"]))


def _kubernetes_validate(documents: list[dict]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump_all(documents, handle)
    result = subprocess.run(
        ["kubernetes-validate", "--strict", handle.name], capture_output=True, text=True
    )
    Path(handle.name).unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_helm_lint_strict(name):
    args = ["lint", "--strict", str(CHART)]
    for path in VALUES_FILES[name]:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(VALUES_FILES))
def test_rendered_manifests_are_valid(name):
    documents = render(*VALUES_FILES[name])
    builtin = [d for d in documents if d["kind"] not in CRD_FILES]
    _kubernetes_validate(builtin)
    for document in documents:
        if document["kind"] in CRD_FILES:
            _crd_validator(document["kind"]).validate(document)


def test_crd_validation_catches_a_broken_object(rendered_all_on):
    monitor = next(d for d in rendered_all_on if d["kind"] == "ServiceMonitor")
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator("ServiceMonitor").validate(broken)


def test_monitoring_objects_need_their_crds():
    kinds = {d["kind"] for d in render(*VALUES_FILES["everything-on"], apis=False)}
    assert not kinds & set(CRD_FILES)  # guarded: no CRD, no object
    kinds = {d["kind"] for d in render(*VALUES_FILES["everything-on"])}
    assert set(CRD_FILES) <= kinds


def test_everything_on_renders_every_object(rendered_all_on):
    kinds = sorted({d["kind"] for d in rendered_all_on})
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "NetworkPolicy",
            "Pod",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Secret",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    labels = {d["kind"]: d["metadata"]["labels"] for d in rendered_all_on}
    assert labels["ServiceMonitor"]["release"] == "kube-prometheus-stack"
    assert labels["PrometheusRule"]["release"] == "kube-prometheus-stack"
    dashboards = [d for d in rendered_all_on if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboards[0]["data"]["quartstack.json"])


@pytest.mark.parametrize(
    "typo",
    [
        "replicaCont=3",
        "serviceMonitor.enable=true",
        "probes.liveness.paht=/x",
        "vault.auth=kerberos",
        "replicaCount=abc",
        "service.port=70000",
    ],
)
def test_schema_rejects_bad_values(typo):
    result = helm("template", "quartstack", str(CHART), "--set", typo, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr or (
        "schema" in result.stderr
    )


def test_schema_forbids_unknown_keys_everywhere():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node, path):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(schema, "values")


def test_grace_period_must_cover_prestop_and_drain():
    result = helm(
        "template",
        "quartstack",
        str(CHART),
        "--set",
        "shutdown.terminationGracePeriodSeconds=20",
        check=False,
    )
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds" in result.stderr


def test_deployment_is_hardened_and_drains():
    documents = render()
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"checksum/config", "checksum/approle"} <= set(pod["metadata"]["annotations"])
    assert container["resources"]["limits"] and container["resources"]["requests"]
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    prestop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(config["data"]["SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > prestop + grace
    assert any(v["mountPath"] == "/tmp" for v in container["volumeMounts"])


def test_probes_and_ports_are_the_apps_real_ones():
    documents = render(*VALUES_FILES["everything-on"])
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/startup"
    port = container["ports"][0]
    assert port["name"] == "http" and port["containerPort"] == 8000
    assert container["args"] == ["serve", "--bind", "0.0.0.0:8000"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    monitor = next(d for d in documents if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] == {
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    assert config["VAULT_APPROLE_DIR"] == "/vault/approle"
    assert config["POSTGRES_HOST"] == "postgres" and config["REDIS_NODES"].startswith("redis-1=")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/vault/approle" in mounts


def test_vault_agent_mode_uses_injector_and_token_file():
    documents = render(*VALUES_FILES["vault-agent"])
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "quartstack"
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    assert config["VAULT_TOKEN_FILE"] == "/vault/secrets/token"
    assert not any(d["kind"] == "Secret" for d in documents)


def test_helm_test_pod_calls_ready_and_an_api_route():
    pod = next(d for d in render() if d["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "/health/ready" in script and 'base + "/"' in script


def test_k8s_dev_stack_is_valid():
    documents = []
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "StatefulSet", "Job", "Service", "Secret"} <= kinds
    _kubernetes_validate(documents)
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in (ROOT / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_skaffold_config_matches_schema():
    schema = json.loads((SHARED / "schemas" / "skaffold-v4beta14.schema.json").read_text())
    documents = list(yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()))
    assert [d["metadata"]["name"] for d in documents] == ["dev-stack", "quartstack"]
    for document in documents:
        assert document["apiVersion"] == "skaffold/v4beta14"
        jsonschema.validate(document, schema)
    app = documents[1]
    release = app["deploy"]["helm"]["releases"][0]
    assert release["setValueTemplates"]["image.repository"] == "{{.IMAGE_REPO_quartstack}}"
    assert app["portForward"][0]["port"] == 8000
    assert {p["name"] for p in app["profiles"]} == {"dev", "prod"}
    broken = dict(app, deploy={"helm": {"releases": [{"name": "x", "chartPth": "y"}]}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_chart_readme_lists_every_value():
    """Every value the schema knows (free-form maps count as one) is in the chart README."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(node, prefix=""):
        for key, child in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            if "properties" in child:
                yield from leaves(child, path + ".")
            else:
                yield path

    paths = list(leaves(schema))
    assert len(paths) > 60
    missing = [path for path in paths if f"`{path}`" not in readme]
    assert not missing, missing
