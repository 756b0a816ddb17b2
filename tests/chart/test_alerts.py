"""The PrometheusRule the chart ships: promtool checks it and its unit tests pass.

The rules are taken from the rendered PrometheusRule (``spec.groups``), so promtool
checks exactly what the chart installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import find, promtool, render

UNIT_TESTS = Path(__file__).with_name("promtool") / "alerts_test.yaml"


def _rules(*sets: str) -> list[dict]:
    rule = find(render(sets=("prometheusRule.enabled=true", *sets)), "PrometheusRule")
    return rule["spec"]["groups"]


def _promtool_test(directory: Path, groups: list[dict]) -> subprocess.CompletedProcess[str]:
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, directory / UNIT_TESTS.name)
    return subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        capture_output=True,
        text=True,
        cwd=directory,
    )


def test_promtool_check_rules(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rules()}, sort_keys=False))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test(tmp_path):
    groups = _rules()
    result = _promtool_test(tmp_path, groups)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in groups for r in g["rules"]}
    assert alerts == {
        "QuartstackHighErrorRatio",
        "QuartstackHighLatencyP95",
        "QuartstackCircuitOpen",
        "QuartstackBackendUnhealthy",
        "QuartstackRateLimitStorm",
        "QuartstackVaultTokenRenewalFailing",
        "QuartstackVaultLeaseExpiring",
        "QuartstackTargetDown",
        "QuartstackOutboxBacklogGrowing",
        "QuartstackOutboxRelayStalled",
    }
    fired, silent = set(), set()
    for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert alerts == fired, alerts - fired
    assert alerts == silent, alerts - silent


@pytest.mark.parametrize(
    "alert, broken",
    [
        ("QuartstackCircuitOpen", lambda e: e.replace("== 2", "== 1")),
        ("QuartstackHighErrorRatio", lambda e: e.replace('status=~"5.."', 'status=~"4.."')),
        ("QuartstackTargetDown", lambda e: e.replace("== 0", "== 1")),
        ("QuartstackOutboxBacklogGrowing", lambda e: e.replace("> 0", "< 0")),
        ("QuartstackOutboxRelayStalled", lambda e: e.replace("unless", "and")),
    ],
)
def test_unit_tests_catch_a_broken_alert(tmp_path, alert, broken):
    groups = _rules()
    rule = next(r for g in groups for r in g["rules"] if r["alert"] == alert)
    rule["expr"] = broken(rule["expr"])
    result = _promtool_test(tmp_path, groups)
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr


def test_thresholds_come_from_values():
    rules = {
        r["alert"]: r
        for g in _rules(
            "prometheusRule.errorRatioThreshold=0.2",
            "prometheusRule.latencyP95Seconds=2.5",
            "prometheusRule.rateLimitedPerSecond=50",
        )
        for r in g["rules"]
    }
    assert rules["QuartstackHighErrorRatio"]["expr"].rstrip().endswith("> 0.2")
    assert rules["QuartstackHighLatencyP95"]["expr"].rstrip().endswith("> 2.5")
    assert rules["QuartstackRateLimitStorm"]["expr"].rstrip().endswith("> 50")
    for rule in rules.values():
        assert 'job="quartstack",namespace="quartstack"' in rule["expr"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
