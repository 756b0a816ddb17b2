"""The container as the Dockerfile builds it, emulated without a Docker engine.

The wheel is built and installed into a fresh virtualenv the way the Dockerfile's
runtime stage installs it, then the image's command runs from /tmp with the image's
environment; its probes, HEALTHCHECK and /metrics are checked for real. Every
metric that an alert or the dashboard uses must be exported by that process.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import CHART, ROOT, render

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROMQL_NAME = re.compile(r"\b([a-z_][a-z0-9_]*)\s*(?=\{|\[)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dockerfile_json(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", DOCKERFILE, re.MULTILINE)
    assert match, instruction
    return json.loads(match.group(1))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def image_process(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    work = tmp_path_factory.mktemp("image")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(work / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next((work / "dist").glob("quartstack-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[uvloop]"], check=True
    )
    port = _free_port()
    entrypoint = _dockerfile_json("ENTRYPOINT")
    command = _dockerfile_json("CMD")
    command = [c.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for c in command]
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PORT": str(port),
    }
    cwd = work / "workdir"
    cwd.mkdir()
    process = subprocess.Popen(
        [str(venv / "bin" / entrypoint[0]), *entrypoint[1:], *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _get(url + "/health/live")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    yield url, process, venv
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_image_command_serves_and_probes_answer(image_process):
    url, process, _ = image_process
    assert process.poll() is None
    for path in ("/health/live", "/health/startup", "/health/ready", "/"):
        status, _ = _get(url + path)
        assert status == 200, path
    deployment = next(d for d in render() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert _get(url + container[probe]["httpGet"]["path"])[0] == 200


def test_dockerfile_healthcheck_command_passes(image_process):
    url, _, venv = image_process
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[[^\n]*\])", DOCKERFILE)
    assert match
    command = json.loads(match.group(1))
    port = url.rsplit(":", 1)[1]
    result = subprocess.run(
        [str(venv / "bin" / command[0]), *command[1:]],
        env={"PORT": port},
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_shape():
    assert DOCKERFILE.count("FROM ") >= 2  # multi-stage
    assert re.search(r"^USER 10001", DOCKERFILE, re.MULTILINE)
    assert _dockerfile_json("ENTRYPOINT") == ["quartstack"]
    assert _dockerfile_json("CMD")[0] == "serve"
    assert "org.opencontainers.image.source" in DOCKERFILE
    assert DOCKERFILE.rstrip().splitlines()[-1].startswith("FROM runtime AS release")


def _alert_and_dashboard_metrics() -> set[str]:
    rule = next(
        d for d in render(sets=("prometheusRule.enabled=true",)) if d["kind"] == "PrometheusRule"
    )
    expressions = [r["expr"] for r in rule["spec"]["groups"][0]["rules"]]
    dashboard = json.loads((CHART / "dashboards" / "quartstack.json").read_text())
    expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        v["query"]
        for v in dashboard["templating"]["list"]
        if "query" in v and "label_values" in str(v["query"])
    ]
    names = set()
    for expression in expressions:
        names.update(PROMQL_NAME.findall(expression))
        names.update(re.findall(r"label_values\(([a-z_]+)", expression))
    functions = {"rate", "sum", "max", "min", "histogram_quantile", "increase", "by", "up"}
    return {n for n in names if n not in functions}


def test_every_metric_used_by_alerts_and_dashboard_is_exported(image_process):
    url, _, _ = image_process
    status, text = _get(url + "/metrics")
    assert status == 200
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    used = _alert_and_dashboard_metrics()
    assert {"http_requests_total", "circuit_breaker_state", "backend_up"} <= used
    missing = []
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if (
            name not in exported
            and base not in exported
            and base.removesuffix("_total") not in exported
        ):
            missing.append(name)
    assert not missing, missing
