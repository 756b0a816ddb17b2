"""The image's SBOM: CycloneDX generated from requirements.lock, the exact set of pinned
wheels the Dockerfile's runtime stage installs (with their hashes), plus quartstack itself
described from pyproject.toml. The chart env (CI) generates it here and checks that it
lists every pinned package at its pinned version with its hashes, and nothing else."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.chart.conftest import ROOT

LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def locked_pins(text: str) -> dict[tuple[str, str], set[str]]:
    """Each ``name==version`` of a hashed lock file with its sha256 hashes. A universal lock
    may pin one name twice under different markers (quart per Python version): both count."""
    pins: dict[tuple[str, str], set[str]] = {}
    current = None
    for line in text.splitlines():
        if match := PIN.match(line):
            current = (_normalise(match.group(1)), match.group(2))
            pins[current] = set()
        if current and (hashes := re.findall(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current].update(hashes)
        if not line.rstrip().endswith("\\"):
            current = None
    return pins


def generate_sbom(out: Path) -> dict:
    """The command CI runs (README "Image"): cyclonedx-py from the chart env."""
    cyclonedx = shutil.which("cyclonedx-py")
    assert cyclonedx, "cyclonedx-py missing: the chart env installs cyclonedx-bom"
    subprocess.run(
        [cyclonedx, "requirements", str(LOCK), "--pyproject", str(ROOT / "pyproject.toml"),
         "--output-reproducible", "--of", "JSON", "-o", str(out)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_locked_pins_reads_names_versions_and_hashes():
    text = (
        "aio-pika==10.2.1 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
        + "\n    # via quartstack\nQuart==0.22.0 ; python_full_version < '3.13' \\\n"
        "    --hash=sha256:" + "c" * 64 + "\nquart==0.23.1 ; python_full_version >= '3.13' \\\n"
        "    --hash=sha256:" + "d" * 64 + "\n"
    )  # fmt: skip
    assert locked_pins(text) == {
        ("aio-pika", "10.2.1"): {"a" * 64, "b" * 64},
        ("quart", "0.22.0"): {"c" * 64},
        ("quart", "0.23.1"): {"d" * 64},
    }


def test_sbom_lists_every_locked_package_with_its_version_and_hashes(tmp_path):
    pins = locked_pins(LOCK.read_text())
    names = {name for name, _ in pins}
    assert len(pins) > 20 and {"quart", "hypercorn", "uvloop"} <= names
    bom = generate_sbom(tmp_path / "quartstack.cdx.json")
    assert bom["bomFormat"] == "CycloneDX"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"]) == (project["name"], project["version"])
    listed = {}
    for component in bom["components"]:
        hashes = {
            h["content"]
            for ref in component.get("externalReferences", [])
            for h in ref.get("hashes", [])
            if h["alg"] == "SHA-256"
        }
        listed[_normalise(component["name"]), component["version"]] = hashes
        assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
    assert listed == pins
