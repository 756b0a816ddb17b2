"""The PrometheusRule the chart ships: promtool checks it and its unit tests pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.conftest import promtool, render

UNIT_TESTS = Path(__file__).with_name("promtool") / "alerts_test.yaml"


def _write_rules(directory: Path) -> Path:
    rule = next(
        d for d in render(sets=("prometheusRule.enabled=true",)) if d["kind"] == "PrometheusRule"
    )
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_check_rules(tmp_path):
    rules = _write_rules(tmp_path)
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test(tmp_path):
    _write_rules(tmp_path)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {
        r["alert"]
        for r in yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"][0]["rules"]
    }
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired, silent = set(), set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert alerts == fired, alerts - fired
    assert alerts == silent, alerts - silent
