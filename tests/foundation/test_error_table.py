"""README's error table lists every problem ``type`` the code can emit, with its status.

The kinds are collected from the code, not from a hand list: every ``Problem(...)`` /
``problem_response(...)`` call with literal arguments, every ``BackendError`` subclass,
and the framework-error mapping of the problem handlers.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import quartstack
from quartstack.resilience import BackendError
from quartstack.web import problems

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "quartstack"
BUILDERS = {"Problem", "problem_response", "problem_body"}
# Calls whose kind is a variable: the generic handlers, which pass on a kind that is
# collected elsewhere (an exception's ``kind``, the framework mapping).
DYNAMIC_SITES = {"web/problems.py"}


def _literal(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _calls() -> tuple[set[tuple[int, str]], list[str]]:
    found: set[tuple[int, str]] = set()
    unknown: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name not in BUILDERS or len(node.args) < 2:
                continue
            status, kind = _literal(node.args[0]), _literal(node.args[1])
            if isinstance(status, int) and isinstance(kind, str):
                found.add((status, kind))
            elif relative not in DYNAMIC_SITES:
                unknown.append(f"{relative}:{node.lineno}")
    return found, unknown


def _backend_errors() -> set[tuple[int, str]]:
    for module in pkgutil.walk_packages(quartstack.__path__, "quartstack."):
        if not module.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(module.name)  # every subclass gets defined
    found: set[tuple[int, str]] = set()
    pending: list[type[BackendError]] = [BackendError]
    while pending:
        cls = pending.pop()
        found.add((cls.status, cls.kind))
        pending.extend(cls.__subclasses__())
    return found


def emitted_kinds() -> set[tuple[int, str]]:
    calls, unknown = _calls()
    assert not unknown, f"problem kinds that are not literals, add them to this test: {unknown}"
    framework = set(problems._HTTP_KINDS.items())
    framework.add((500, "internal-error"))
    return calls | _backend_errors() | framework


def readme_table() -> dict[int, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows.setdefault(int(cells[0]), set()).update(re.findall(r"/problems/([\w-]+)", line))
    return rows


def test_every_problem_kind_the_code_emits_is_in_the_readme_error_table():
    emitted = emitted_kinds()
    assert len(emitted) > 20  # the collection itself works
    table = readme_table()
    missing = sorted(
        f"{status} /problems/{kind}"
        for status, kind in emitted
        if kind not in table.get(status, set())
    )
    assert not missing, f"README's error table lacks: {missing}"


def test_the_readme_error_table_lists_nothing_the_code_cannot_emit():
    emitted = {kind for _, kind in emitted_kinds()}
    documented = {kind for kinds in readme_table().values() for kind in kinds}
    assert documented - emitted == set()


def test_framework_errors_outside_the_mapping_are_documented_as_a_pattern():
    section = (ROOT / "README.md").read_text().split("\n## Errors\n", 1)[1]
    assert "/problems/http-<status>" in section.split("\n## ", 1)[0]
