"""Fail unless this environment runs every direct dependency at its lower bound.

`tox -e lowest` installs with uv's ``--resolution lowest-direct``, but another package can lift
a dependency above the bound pyproject.toml states (nx-27017 needs a newer pymongo, say); then
the bound is a promise no test keeps. The installed version must start with the bound's
release numbers (``>=2.3`` accepts 2.3.1 when 2.3.0 was never released).
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

# what tox -e lowest installs besides the runtime dependencies
EXTRAS = ("test", "uvicorn")


def main() -> int:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    requirements += [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    wrong = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if not bounds:
            wrong.append(f"{requirement}: no lower bound")
            continue
        installed = Version(version(requirement.name))
        release = bounds[0].release
        if installed.release[: len(release)] != release:
            wrong.append(f"{requirement}: {installed} installed (another package needs it)")
    for line in wrong:
        print(f"lower bound not tested: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
