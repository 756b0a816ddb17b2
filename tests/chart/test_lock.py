"""The pins that make builds reproducible agree with what they pin.

requirements.lock (the image's dependencies, ``tox -e lock``) must hold, for every Python the
image may run, exactly one hashed version of each runtime dependency pyproject.toml declares,
inside its bounds; the Dockerfile must install from it. The chart env's packages and the
helm/kubectl wheel are hashed pins too, and the linters are pinned alike in tox.ini and the
dev extra. (test_image.py installs the lock the way the Dockerfile does and runs ``pip check``.)
"""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.chart.conftest import ROOT
from tests.chart.test_image import _pip_runs, runtime_install

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TOX = configparser.ConfigParser(interpolation=None)
TOX.read(ROOT / "tox.ini")
IMAGE_EXTRAS = ("uvicorn",)  # what the image installs besides the runtime deps
PYTHONS = ("3.11.0", "3.11.7", "3.12.1", "3.13.0")  # requires-python >= 3.11, on Linux


def _lock(path: Path) -> dict[str, list[tuple[str, str | None, list[str]]]]:
    """name -> [(version, marker or None, hashes)] of a `uv pip compile --generate-hashes` file."""
    entries: dict[str, list[tuple[str, str | None, list[str]]]] = {}
    hashes: list[str] = []
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9][\w.-]*)==(\S+?)(?:\s*;\s*(.+?))?\s*\\?$", line)
        if pin:
            hashes = []
            name, version, marker = pin.groups()
            entries.setdefault(canonicalize_name(name), []).append((version, marker, hashes))
        elif hash_ := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line):
            hashes.append(hash_.group(1))
        else:
            assert not line.strip() or line.lstrip().startswith("#"), line
    return entries


def _linux(python: str) -> dict[str, str]:
    env = default_environment()
    env.update(
        python_version=".".join(python.split(".")[:2]),
        python_full_version=python,
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        platform_machine="x86_64",
    )
    return env


def _runtime_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = [r for extra in IMAGE_EXTRAS for r in project["optional-dependencies"][extra]]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


@pytest.mark.parametrize("python", PYTHONS)
def test_lock_pins_every_runtime_dependency_within_its_bounds(python):
    lock = _lock(ROOT / "requirements.lock")
    env = _linux(python)
    for requirement in _runtime_requirements():
        if requirement.marker and not requirement.marker.evaluate(env):
            continue
        candidates = lock.get(canonicalize_name(requirement.name), [])
        pins = [v for v, marker, _ in candidates if not marker or _marker(marker, env)]
        assert len(pins) == 1, f"{requirement} on Python {python}: lock has {pins}; tox -e lock"
        assert requirement.specifier.contains(pins[0], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[0]} outside {requirement}; "
            "run tox -e lock"
        )


def _marker(text: str, env: dict[str, str]) -> bool:
    return Requirement(f"x; {text}").marker.evaluate(env)


@pytest.mark.parametrize(
    "lock",
    [
        "requirements.lock",
        "scripts/build-requirements.lock",
        "scripts/chart-requirements.lock",
        "scripts/chart-tools.lock",
    ],
)
def test_every_pin_is_exact_and_hashed(lock):
    entries = _lock(ROOT / lock)
    assert entries
    unhashed = [name for name, pins in entries.items() for _, _, hashes in pins if not hashes]
    assert not unhashed, f"{lock}: pins without a hash: {unhashed}"


def test_chart_env_and_tools_install_their_locks():
    assert TOX["testenv:chart"]["deps"].strip() == "-r scripts/chart-requirements.lock"
    for source, lock in [
        ("scripts/build-requirements.in", "scripts/build-requirements.lock"),
        ("scripts/chart-requirements.in", "scripts/chart-requirements.lock"),
        ("scripts/chart-tools.in", "scripts/chart-tools.lock"),
    ]:
        pinned = _lock(ROOT / lock)
        for line in (ROOT / source).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                requirement = Requirement(line)
                [(version, _, _)] = pinned[canonicalize_name(requirement.name)]
                assert requirement.specifier.contains(version), (source, version)
    script = (ROOT / "scripts" / "install-chart-tools.sh").read_text()
    assert re.search(r"pip download .*--require-hashes -r \"\$LOCK\"", script.replace("\\\n", ""))
    assert re.search(r'^PROMETHEUS_DEB_SHA256="[0-9a-f]{64}"$', script, re.MULTILINE)
    assert re.search(r'^PROMTOOL_SHA256="[0-9a-f]{64}"$', script, re.MULTILINE)


def test_dockerfile_installs_the_lock_with_hashes_then_the_wheel_alone():
    mounts, commands = runtime_install()
    assert mounts.get("/requirements.lock") == "requirements.lock"
    assert [c[:2] for c in commands] == [["pip", "install"], ["pip", "install"], ["pip", "check"]]
    locked, wheel = commands[0], commands[1]
    assert {"--require-hashes", "--only-binary=:all:"} <= set(locked)
    assert locked[locked.index("-r") + 1] == "/requirements.lock"
    assert "--no-deps" in wheel and wheel[-1] == "/dist/quartstack-*.whl"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "requirements.lock" not in ignored and "*.lock" not in ignored
    assert "!scripts/build-requirements.lock" in ignored  # the build stage's pins


def test_image_builds_the_wheel_with_the_pinned_backend():
    [(mounts, [install]), (_, [wheel])] = _pip_runs("build")
    assert mounts == {"/build-requirements.lock": "scripts/build-requirements.lock"}
    assert {"--require-hashes", "--only-binary=:all:", "/build-requirements.lock"} <= set(install)
    assert {"--no-deps", "--no-build-isolation"} <= set(wheel)
    backend = PYPROJECT["build-system"]["requires"]
    pinned = _lock(ROOT / "scripts/build-requirements.lock")
    for requirement in map(Requirement, backend):
        [(version, _, _)] = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (requirement, version)


def test_linters_are_pinned_alike_in_tox_and_the_dev_extra():
    dev = {Requirement(r).name: str(Requirement(r).specifier) for r in _dev_extra()}
    for env, tool in [("lint", "ruff"), ("type", "mypy")]:
        [pin] = TOX[f"testenv:{env}"]["deps"].split()
        assert re.fullmatch(rf"{tool}==[\w.]+", pin), pin
        assert dev[tool] == pin.removeprefix(tool), (tool, dev[tool], pin)


def _dev_extra() -> list[str]:
    return PYPROJECT["project"]["optional-dependencies"]["dev"]


def test_lowest_env_runs_by_default():
    """The lower bounds are tested on every run of the README's command, not on request."""
    env_list = [e.strip() for e in TOX["tox"]["env_list"].split(",")]
    assert "lowest" in env_list
    assert "--resolution lowest-direct" in TOX["testenv:lowest"]["commands_pre"]
