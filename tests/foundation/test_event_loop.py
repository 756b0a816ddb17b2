"""``pip install .`` brings uvloop on Linux (CPython), so the README's first command
serves on the fast loop; ``--no-uvloop`` keeps asyncio's."""

from __future__ import annotations

import json
from importlib.metadata import requires

import uvloop
from packaging.requirements import Requirement

from quartstack.cli import _uvloop_factory
from tests.support.polling import wait_until_sync
from tests.support.process import ServiceProcess


def test_uvloop_is_a_runtime_dependency_here():
    """Not behind an extra: a plain install of the distribution requires it here."""
    wanted = [Requirement(r) for r in requires("quartstack") or []]
    uvloop_requirements = [r for r in wanted if r.name == "uvloop"]
    assert uvloop_requirements, "quartstack does not require uvloop"
    for requirement in uvloop_requirements:
        assert requirement.marker is not None  # never on Windows or PyPy, where it cannot run
        assert requirement.marker.evaluate({"extra": ""}), requirement


def test_the_flag_chooses_the_loop():
    assert _uvloop_factory(disabled=False) is uvloop.new_event_loop
    assert _uvloop_factory(disabled=True) is None


def test_serve_runs_uvloop_by_default():
    with ServiceProcess({"RATE_LIMIT_ENABLED": "false"}) as process:
        # its first line, logged before the loop starts: no need to wait until it serves
        lines = process.log_lines
        starting = wait_until_sync(lambda: _starting_line(lines()), what="the starting line")
    assert starting["uvloop"] is True


def _starting_line(lines: list[str]) -> dict[str, object] | None:
    for line in lines:
        if line.startswith("{") and json.loads(line).get("message") == "starting":
            return json.loads(line)
    return None
