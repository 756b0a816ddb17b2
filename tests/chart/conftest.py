"""Offline validation of the Helm chart, k8s/ and skaffold.yaml: helm, kubectl kustomize,
kubernetes-validate, promtool and JSON schemas. No cluster, no Docker engine.

scripts/install-chart-tools.sh installs the tools (``tox -e chart`` runs it first); a
missing tool fails the tests rather than skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "quartstack"
# Third-party schemas, copied into the repository (tests/chart/schemas/README.md).
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "quartstack"
NAMESPACE = "quartstack"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
VALUES_FILES = {
    "defaults": [],
    "prod": [CHART / "values-prod.yaml"],
    "dev": [CHART / "values-dev.yaml"],
    "everything-on": [CHART / "ci" / "everything-on-values.yaml"],
    "everything-off": [CHART / "ci" / "everything-off-values.yaml"],
    "vault-agent": [CHART / "ci" / "agent-values.yaml"],
    "pod-extras": [CHART / "ci" / "pod-extras-values.yaml"],
    "monitoring": [CHART / "ci" / "monitoring-values.yaml"],
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema
# kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.25.0", None)


def pytest_configure(config: pytest.Config) -> None:
    # The image tests install a virtualenv; pytest-timeout (when present) must allow it.
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (pytest-timeout)")


def _tool(name: str, env: str) -> str:
    candidate = os.environ.get(env) or str(ROOT / ".tools" / name)
    if not Path(candidate).is_file():
        raise RuntimeError(f"{name} missing: run scripts/install-chart-tools.sh")
    return candidate


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("helm", "HELM"), *args], capture_output=True, text=True, check=check
    )


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("kubectl", "KUBECTL"), *args], capture_output=True, text=True, check=True
    )


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool missing: run scripts/install-chart-tools.sh")
    return path


def template_args(
    *values: Path,
    sets: tuple[str, ...] = (),
    apis: bool = True,
    namespace: str = NAMESPACE,
    kube_version: str | None = None,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace]
    if kube_version:  # else helm's own default (its newest Kubernetes)
        args += ["--kube-version", kube_version]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    if apis:
        for api in MONITORING_APIS:
            args += ["--api-versions", api]
    return args


def render(
    *values: Path,
    sets: tuple[str, ...] = (),
    apis: bool = True,
    namespace: str = NAMESPACE,
    kube_version: str | None = None,
) -> list[dict]:
    args = template_args(
        *values, sets=sets, apis=apis, namespace=namespace, kube_version=kube_version
    )
    output = helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def find(documents: list[dict], kind: str, name_suffix: str = "") -> dict:
    matches = [
        d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matches) == 1, (kind, name_suffix, [d["metadata"]["name"] for d in matches])
    return matches[0]


def kubernetes_validate(documents: list[dict], version: str | None = None) -> None:
    """Strict validation against the bundled Kubernetes schemas (unknown fields fail)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifests.yaml"
        path.write_text(yaml.safe_dump_all(documents))
        executable = Path(sys.executable).with_name("kubernetes-validate")
        command = [str(executable) if executable.exists() else "kubernetes-validate"]
        command += ["--strict", "--quiet"]
        if version:
            command += ["--kubernetes-version", version]
        result = subprocess.run([*command, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout, result.stdout


@pytest.fixture(scope="session")
def rendered_all_on() -> list[dict]:
    return render(*VALUES_FILES["everything-on"])


@pytest.fixture(scope="session")
def rendered_defaults() -> list[dict]:
    return render()
