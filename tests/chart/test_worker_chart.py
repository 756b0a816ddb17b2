"""The worker's chart objects: Deployment, Service, PDB, ServiceMonitor, alerts, KEDA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.chart.conftest import (
    KUBERNETES_VERSIONS,
    SCHEMAS,
    find,
    kubernetes_validate,
    promtool,
    render,
)
from tests.chart.test_chart import CRD_FILES, _crd_validator, _python_patterns

UNIT_TESTS = Path(__file__).with_name("promtool") / "worker_alerts_test.yaml"
KEDA_CRD = SCHEMAS / "crd-keda-scaledobjects.yaml"
ON = (
    "worker.enabled=true",
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "worker.podDisruptionBudget.enabled=true",
    "vault.address=https://vault:8200",
    "vault.approle.roleId=r",
    "vault.approle.secretId=s",
)
ALERTS = {
    "QuartstackWorkerDeadLetters",
    "QuartstackWorkerProjectionLagHigh",
    "QuartstackWorkerConsumersMissing",
}


def _worker(documents: list[dict], kind: str) -> dict:
    return find(documents, kind, "-worker")


def test_off_by_default():
    names = [d["metadata"]["name"] for d in render()]
    assert not [name for name in names if name.endswith("-worker")]


def test_worker_objects_are_valid():
    documents = render(sets=ON)
    ours = [d for d in documents if d["metadata"]["name"].endswith("-worker")]
    assert {d["kind"] for d in ours} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    }
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate([d for d in ours if d["kind"] not in CRD_FILES], version)
    for document in ours:
        if document["kind"] in CRD_FILES:
            _crd_validator(document["kind"]).validate(document)


def test_worker_pods_stay_out_of_the_apis_selectors():
    documents = render(sets=ON)
    pod_labels = _worker(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    api_service = next(
        d
        for d in documents
        if d["kind"] == "Service" and not d["metadata"]["name"].endswith("-worker")
    )
    selector = api_service["spec"]["selector"]
    assert not all(pod_labels.get(k) == v for k, v in selector.items())
    worker_selector = _worker(documents, "Service")["spec"]["selector"]
    assert all(pod_labels.get(k) == v for k, v in worker_selector.items())


def test_deployment_runs_the_worker_with_probes_on_its_port_and_the_vault_wiring():
    documents = render(sets=(*ON, "worker.port=8111", "worker.queue=q.custom"))
    deployment = _worker(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["worker", "--bind", "0.0.0.0:8111"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 8111, "protocol": "TCP"}]
    for probe, path in (
        ("startupProbe", "/health/startup"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["WORKER_PORT"] == "8111" and env["WORKER_QUEUE"] == "q.custom"
    config_map = find(documents, "ConfigMap")["metadata"]["name"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map}}]  # the API's
    assert any(m["name"] == "vault-approle" for m in container["volumeMounts"])
    assert pod["terminationGracePeriodSeconds"] >= 20 + 5  # grace + close
    assert deployment["spec"]["replicas"] == 2


def test_keda_scaledobject_is_valid_against_kedas_crd():
    documents = render(sets=(*ON, "worker.keda.enabled=true", "worker.keda.authenticationRef=rmq"))
    scaled = _worker(documents, "ScaledObject")
    crd = next(d for d in yaml.safe_load_all(KEDA_CRD.read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    validator = jsonschema.Draft7Validator(_python_patterns(version["schema"]["openAPIV3Schema"]))
    validator.validate(scaled)
    assert scaled["spec"]["scaleTargetRef"]["name"].endswith("-worker")
    assert "replicas" not in _worker(documents, "Deployment")["spec"]  # KEDA owns it
    broken = {**scaled, "spec": {**scaled["spec"], "minReplicaCount": "one"}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_keda_needs_a_trigger_authentication():
    with pytest.raises(subprocess.CalledProcessError) as caught:
        render(sets=(*ON, "worker.keda.enabled=true"))
    assert "authenticationRef" in caught.value.stderr


def _rules() -> list[dict]:
    groups: list[dict] = _worker(render(sets=ON), "PrometheusRule")["spec"]["groups"]
    return groups


def _promtool_test(directory: Path, groups: list[dict]) -> subprocess.CompletedProcess[str]:
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        capture_output=True,
        text=True,
        cwd=directory,
    )


def test_alerts_pass_their_promtool_unit_tests(tmp_path):
    groups = _rules()
    assert {r["alert"] for g in groups for r in g["rules"]} == ALERTS
    result = _promtool_test(tmp_path, groups)
    assert result.returncode == 0, result.stdout + result.stderr
    fired, silent = set(), set()
    for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert fired == silent == ALERTS


@pytest.mark.parametrize(
    ("alert", "broken"),
    [
        ("QuartstackWorkerDeadLetters", lambda e: e.replace("> 0", "> 5")),
        ("QuartstackWorkerProjectionLagHigh", lambda e: e.replace("0.95", "0.5")),
        ("QuartstackWorkerConsumersMissing", lambda e: e.replace(" or vector(0)", "")),
    ],
)
def test_unit_tests_catch_a_broken_alert(tmp_path, alert, broken):
    groups = _rules()
    rule = next(r for g in groups for r in g["rules"] if r["alert"] == alert)
    rule["expr"] = broken(rule["expr"])
    assert _promtool_test(tmp_path, groups).returncode != 0
