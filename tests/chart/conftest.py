"""Offline chart validation: helm, kubernetes-validate, promtool, JSON schemas.

The tools are installed by scripts/install-chart-tools.sh (tox -e chart runs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "quartstack"
SHARED = ROOT.parent / "shared"
RELEASE = "quartstack"
MONITORING_APIS = [
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
]
VALUES_FILES = {
    "defaults": [],
    "prod": [CHART / "values-prod.yaml"],
    "dev": [CHART / "values-dev.yaml"],
    "everything-on": [CHART / "ci" / "everything-on-values.yaml"],
    "everything-off": [CHART / "ci" / "everything-off-values.yaml"],
    "vault-agent": [CHART / "ci" / "agent-values.yaml"],
}


def helm_binary() -> str:
    candidate = os.environ.get("HELM") or str(ROOT / ".tools" / "helm")
    if not Path(candidate).exists():
        raise RuntimeError("helm missing: run scripts/install-chart-tools.sh")
    return candidate


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=check)


def render(*values: Path, sets: tuple[str, ...] = (), apis: bool = True) -> list[dict]:
    args = ["template", RELEASE, str(CHART)]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    if apis:
        args += MONITORING_APIS
    output = helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool missing: run scripts/install-chart-tools.sh")
    return path


@pytest.fixture(scope="session")
def rendered_all_on() -> list[dict]:
    return render(*VALUES_FILES["everything-on"])
