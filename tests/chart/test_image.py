"""The container as the Dockerfile builds it, emulated without a Docker engine.

The wheel is built and installed into a fresh virtualenv the way the Dockerfile's
runtime stage installs it; then the image's ENTRYPOINT + CMD run with the image's
environment plus the chart's rendered ConfigMap, from an empty working directory, with
HOME and TMPDIR on a private directory standing in for the pod's /tmp emptyDir. The
probes, the HEALTHCHECK and /metrics are checked for real, and every metric that an
alert or the dashboard uses must be exported by that process.
"""

from __future__ import annotations

import contextlib
import glob
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import ROOT, VALUES_FILES, find, render
from tests.support.net import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()
TARGET_LABELS = {"job", "namespace", "instance", "pod", "service_name", "le"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


# --- reading the Dockerfile ------------------------------------------------------------------
def _stage(name: str) -> str:
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, name
    return match.group(1)


def _instruction_json(text: str, instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, instruction
    return json.loads(match.group(1))


def _image_env() -> dict[str, str]:
    """The ENV of the runtime stage (``KEY=value`` pairs, backslash continuations)."""
    text = _stage("runtime").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.MULTILINE):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for root in roots:
        for path in root.rglob("*"):
            stat = path.lstat()
            files[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return files


# --- the emulated image ------------------------------------------------------------------------
@dataclass
class Image:
    root: Path  # stands in for the image's filesystem
    venv: Path
    workdir: Path  # WORKDIR

    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, port: int, tmp: Path, config: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": f"{self.venv / 'bin'}:/usr/bin:/bin"}
        env.update(_image_env())  # the pod's envFrom ConfigMap overrides the image's ENV
        env.update(config if config is not None else _chart_config())
        env.update(HOME=str(tmp), TMPDIR=str(tmp), PORT=str(port))
        return env

    def start(self, port: int, tmp: Path) -> subprocess.Popen[bytes]:
        """The image's ENTRYPOINT + CMD as they are: only HOST (loopback instead of every
        interface) and PORT (from the environment, like the chart's ConfigMap) differ."""
        entrypoint = _instruction_json(_stage("runtime"), "ENTRYPOINT")
        command = _instruction_json(_stage("runtime"), "CMD")
        log = self.root / f"serve-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(self.venv / "bin" / entrypoint[0]), *entrypoint[1:], *command],
                cwd=self.workdir,
                env={**self.env(port, tmp), "HOST": "127.0.0.1"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        process.log = log  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if _get(f"http://127.0.0.1:{port}/health/live")[0] == 200:
                    return process
            except OSError:
                pass
            time.sleep(0.2)
        process.kill()
        raise AssertionError("the image command did not answer /health/live in 60 s")


def _chart_config(*values: Path) -> dict[str, str]:
    return find(render(*values), "ConfigMap", "quartstack")["data"]


def _pip_runs(stage: str) -> list[tuple[dict[str, str], list[list[str]]]]:
    """Each RUN of ``stage`` that calls pip: its bind mounts (target -> source) and its pip
    commands, in order."""
    text = _stage(stage).replace("\\\n", " ")
    runs = []
    for run in (line for line in text.splitlines() if line.startswith("RUN ") and "pip " in line):
        mounts = {}
        for spec in re.findall(r"--mount=(\S+)", run):
            options = dict(item.split("=", 1) for item in spec.split(","))
            assert options["type"] == "bind", spec
            mounts[options["target"]] = options["source"]
        commands = [re.search(r"\bpip\s.*", part) for part in run.split("&&")]
        runs.append((mounts, [shlex.split(match.group(0)) for match in commands if match]))
    return runs


def runtime_install() -> tuple[dict[str, str], list[list[str]]]:
    """The runtime stage's one install RUN: its bind mounts and pip commands."""
    [run] = _pip_runs("runtime")
    return run


def _replay(stage: str, venv: Path, paths: dict[str, str], cwd: Path) -> None:
    """Run ``stage``'s pip commands with ``venv``'s pip, its paths pointed at ours: ``paths``
    maps a stage's own paths (/dist), and any other mount source is in the build context."""
    for mounts, commands in _pip_runs(stage):
        targets = {t: paths.get(s, str(ROOT / s)) for t, s in mounts.items()} | paths
        for command in commands:
            args = []
            for arg in command[1:]:
                for target, source in targets.items():
                    arg = re.sub(rf"^{re.escape(target)}(?=/|$)", source, arg)
                args += sorted(glob.glob(arg)) if "*" in arg else [arg]
            pip = [str(venv / "bin" / "pip"), "--disable-pip-version-check", "--quiet"]
            subprocess.run([*pip, *args], check=True, cwd=cwd)


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    """Build the wheel as the build stage does and install it into a fresh venv as the
    runtime stage does: each stage's own pip commands, in a venv of its own."""
    root = Path(tempfile.mkdtemp(prefix="quartstack-image-"))
    try:
        paths = {"/dist": str(root / "dist")}
        for stage in ("build", "runtime"):
            venv = root / ("venv" if stage == "runtime" else stage)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            _replay(stage, venv, paths, cwd=ROOT)
        workdir = root / "app"
        workdir.mkdir()
        yield Image(root, root / "venv", workdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def running(image: Image) -> Iterator[str]:
    tmp = image.root / "tmp"
    tmp.mkdir()
    port = free_port()
    process = image.start(port, tmp)
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    process.wait(60)


# --- the Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_shape():
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.MULTILINE)
    assert [name for _, name in stages] == ["build", "runtime", "dev", "release"]
    runtime = _stage("runtime")
    assert "pip wheel" in _stage("build") and "--mount=type=bind,from=build" in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    assert re.search(r"useradd --system --uid 10001", runtime)
    assert _instruction_json(runtime, "ENTRYPOINT") == ["quartstack"]
    assert _instruction_json(runtime, "CMD") == ["serve"]  # binds HOST:PORT
    assert _instruction_json(_stage("dev"), "CMD") == ["serve", "--reload"]
    assert re.search(r"^EXPOSE 8000$", runtime, re.MULTILINE)
    env = _image_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"
    workdir = re.findall(r"^WORKDIR (\S+)$", runtime, re.MULTILINE)[-1]
    assert workdir != "/tmp" and not workdir.startswith("/tmp/")
    for label in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in runtime, label
    assert "/health/live" in re.search(r"^HEALTHCHECK .*?\n\s*CMD .*$", runtime, re.M).group(0)
    assert DOCKERFILE.rstrip().splitlines()[-1] == "FROM runtime AS release"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", ".tox", "tests", "charts"} <= set(ignored)
    assert not {"src", "pyproject.toml", "README.md"} & set(ignored)


def _base_images() -> dict[str, str]:
    """Each build ARG's default value, and the FROM line of each stage."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.MULTILINE))
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.MULTILINE)
    return args | {name: base for base, name in stages}


def base_image_problems(reference: str) -> list[str]:
    """What is wrong with a base image reference: the tag must be python 3.11 slim (the
    version pyproject's tooling targets) and a digest, when given, a full sha256."""
    name, _, digest = reference.partition("@")
    problems = [] if name == "python:3.11-slim" else [f"base image {name}"]
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        problems.append(f"malformed digest {digest}")
    return problems


def test_base_image_problems():
    assert base_image_problems("python:3.11-slim") == []
    assert base_image_problems("python:3.11-slim@sha256:" + "ab" * 32) == []
    assert base_image_problems("python:3.11-slim@sha256:abc") == ["malformed digest sha256:abc"]
    assert base_image_problems("python:3.12") == ["base image python:3.12"]


def test_both_stages_share_one_base_image_reference():
    """The build and runtime stages come FROM the one PYTHON_IMAGE build arg, so pinning its
    digest (in the ARG or with --build-arg) pins both; the Dockerfile says how."""
    images = _base_images()
    assert images["build"] == images["runtime"] == "${PYTHON_IMAGE}"
    assert base_image_problems(images["PYTHON_IMAGE"]) == []
    assert "--build-arg PYTHON_IMAGE=python:3.11-slim@sha256:" in DOCKERFILE


def test_version_has_one_source():
    """pyproject.toml holds the version; the chart's appVersion must equal it, and the
    Dockerfile carries no copy (the build passes VERSION for the label)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts" / "quartstack" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert re.search(r"^ARG VERSION$", _stage("runtime"), re.MULTILINE)
    assert version not in DOCKERFILE
    init = (ROOT / "src" / "quartstack" / "__init__.py").read_text()
    assert 'version("quartstack")' in init and version not in init


@pytest.mark.timeout(900)
def test_installed_version_is_the_wheels_metadata(image):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = subprocess.run(
        [str(image.venv / "bin" / "quartstack"), "--version"],
        capture_output=True,
        text=True,
        cwd=image.workdir,
    )
    assert result.stdout.strip() == f"quartstack {version}", result.stderr


def test_chart_runs_the_image_as_its_user():
    deployment = find(render(), "Deployment")["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+):(\d+)$", _stage("runtime"), re.MULTILINE)
    assert deployment["securityContext"]["runAsUser"] == int(user.group(1))
    assert deployment["securityContext"]["runAsGroup"] == int(user.group(2))
    port = int(_image_env()["PORT"])
    assert deployment["containers"][0]["ports"][0]["containerPort"] == port


# --- the running image -------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_image_command_serves_and_probes_answer(running):
    for path in ("/health/live", "/health/startup", "/health/ready", "/", "/openapi.json"):
        status, _ = _get(running + path)
        assert status == 200, path
    assert json.loads(_get(running + "/")[1])["name"] == "quartstack"
    container = find(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert _get(running + container[probe]["httpGet"]["path"])[0] == 200, probe
    # The helm test pod's script, against the running app.
    script = find(render(), "Pod")["spec"]["containers"][0]["command"][-1]
    script = re.sub(r'base = "http://[^"]+"', f'base = "{running}"', script)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(900)
def test_dockerfile_healthcheck_command_passes(image, running):
    command = _instruction_json(
        re.search(r"^HEALTHCHECK .*?\n\s*(CMD .*)$", _stage("runtime"), re.M).group(1), "CMD"
    )
    # The container's environment: the image's ENV with the PORT the server was started on
    # (the chart's ConfigMap sets it), which the server bound without any --bind.
    port = running.rsplit(":", 1)[1]
    result = subprocess.run(
        [str(image.venv / "bin" / command[0]), *command[1:]],
        env={**_image_env(), "PORT": port},
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    dead = subprocess.run(
        [str(image.venv / "bin" / command[0]), *command[1:]],
        env={"PORT": str(free_port())},
        capture_output=True,
        timeout=10,
    )
    assert dead.returncode != 0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["defaults", "prod", "dev", "everything-on", "vault-agent"])
def test_chart_settings_are_accepted_by_the_app(image, name):
    """The ConfigMap each values file renders (plus extraEnv) passes the app's settings
    validation, so no pod crash-loops on a setting the chart wrote."""
    documents = render(*VALUES_FILES[name])
    env = dict(find(documents, "ConfigMap", "quartstack")["data"])
    container = find(documents, "Deployment", "quartstack")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    check = (
        "from quartstack.settings import load_settings\n"
        "s = load_settings()\n"
        "print(s.port, s.shutdown_grace_seconds, sorted(s.enabled_backends))\n"
    )
    result = subprocess.run(
        [image.python(), "-c", check],
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        cwd=image.workdir,
    )
    assert result.returncode == 0, result.stderr
    port, grace, _ = result.stdout.split(" ", 2)
    assert int(port) == container["ports"][0]["containerPort"]
    assert float(grace) == float(env["SHUTDOWN_GRACE_SECONDS"])


@pytest.mark.timeout(900)
def test_sigterm_drains_and_writes_only_to_tmp(image):
    """One more instance: it writes nothing outside its /tmp, turns unready on SIGTERM
    and exits cleanly well inside the pod's terminationGracePeriodSeconds."""
    before = _snapshot(image.venv, image.workdir)
    tmp = image.root / "tmp-sigterm"
    tmp.mkdir()
    port = free_port()
    process = image.start(port, tmp)
    url = f"http://127.0.0.1:{port}"
    for path in ("/", "/health/ready", "/metrics", "/docs", "/no-such-route"):
        _get(url + path)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    statuses = []
    while process.poll() is None and time.monotonic() - began < 60:
        with contextlib.suppress(OSError):
            statuses.append(_get(url + "/health/ready")[0])
        time.sleep(0.05)
    returncode = process.wait(60)
    elapsed = time.monotonic() - began
    assert returncode == 0, process.log.read_text()[-3000:]
    assert 503 in statuses, statuses
    assert 200 not in statuses[statuses.index(503) :], statuses
    spec = find(render(), "Deployment")["spec"]["template"]["spec"]
    prestop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]  # k8s >= 1.30
    assert prestop + elapsed < spec["terminationGracePeriodSeconds"]
    assert _snapshot(image.venv, image.workdir) == before


# --- metrics used by the alerts and the dashboard ---------------------------------------------
def _promql_metrics(expression: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    labels, strings, durations or Grafana variables."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expression)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(\boffset\s+|@\s*)-?[\w.]+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group(0).lower() not in PROMQL_WORDS:
            names.add(match.group(0))
    return names


def _promql_labels(expression: str) -> dict[str, set[str]]:
    """Label names each metric is filtered on, plus '*' for grouping labels."""
    used: dict[str, set[str]] = {}
    for metric, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expression):
        used.setdefault(metric, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expression):
        used.setdefault("*", set()).update(x.strip() for x in grouping.split(",") if x.strip())
    return used


def _shipped_expressions() -> list[str]:
    documents = render(sets=("prometheusRule.enabled=true", "grafanaDashboard.enabled=true"))
    rule = find(documents, "PrometheusRule")
    expressions = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(find(documents, "ConfigMap", "-dashboard")["data"]["quartstack.json"])
    expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, str) and query.startswith("label_values("):
            metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query).groups()
            expressions.append(f"max by ({label}) ({metric})")
    return expressions


def _exposition(text: str) -> tuple[set[str], dict[str, set[str]]]:
    families = set(re.findall(r"^# TYPE (\S+) \S+$", text, re.MULTILINE))
    labels: dict[str, set[str]] = {}
    for name, body in re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? ", text, re.MULTILINE):
        labels.setdefault(name, set()).update(re.findall(r'(\w+)="', body or ""))
    return families, labels


def test_promql_parsing():
    assert _promql_metrics(
        'histogram_quantile(0.95, sum by (le, job) (rate(x_bucket{job="$job",a=~"b{1}"}[5m])))'
        " / on (job) group_left sum(y_total offset 5m) > bool 2e3 and up == 0"
    ) == {"x_bucket", "y_total", "up"}
    assert _promql_labels('sum by (service) (z{status=~"5..", job="j"})') == {
        "z": {"status", "job"},
        "*": {"service"},
    }


# Every metric of the app with one child per labelled metric, exposed as a scrape would:
# the label names of all of them, including those that have no samples yet in a process
# without backends (``_labelnames`` is private: an upgrade that drops it fails here).
_EVERY_CHILD = """
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
import quartstack.app  # imports every module that declares a metric
from quartstack import metrics
for metric in vars(metrics).values():
    if isinstance(metric, MetricWrapperBase) and metric._labelnames:
        metric.labels(*["x"] * len(metric._labelnames))
# The per-request HTTP metrics are a collector of their own (web/http_metrics.py).
metrics.HTTP_METRICS.finished(metrics.HTTP_METRICS.route("x", "x"), 200, 0.0)
print(generate_latest(metrics.REGISTRY).decode())
"""


def _label_names(image: Image) -> dict[str, set[str]]:
    """Label names of every sample name the app can expose (from the image's venv)."""
    result = subprocess.run(
        [image.python(), "-c", _EVERY_CHILD], capture_output=True, text=True, cwd=image.workdir
    )
    assert result.returncode == 0, result.stderr
    return _exposition(result.stdout)[1]


def _label_problems(expressions: list[str], labels: dict[str, set[str]]) -> list[tuple]:
    """Metrics the expressions use that the app does not expose, and label names they
    filter or group on that those metrics do not have."""
    wrong: list[tuple] = []
    for expression in expressions:
        used = _promql_labels(expression)
        metrics = _promql_metrics(expression) - {"up"}  # Prometheus's own
        for metric in sorted(metrics):
            if metric not in labels:
                wrong.append((metric, "not exposed by the app"))
                continue
            for label in used.get(metric, set()) - TARGET_LABELS - labels[metric]:
                wrong.append((metric, label))
        have = set().union(*(labels.get(m, set()) for m in metrics))
        for label in used.get("*", set()) - TARGET_LABELS - have:
            wrong.append((expression, label))
    return wrong


def test_label_problems_catch_absent_metrics_and_labels():
    labels = {"a_total": {"service"}, "b": {"service", "state"}}
    assert _label_problems(['sum by (service) (a_total{service="x"})'], labels) == []
    assert _label_problems(["sum by (state) (b)", "max(c_total)"], labels) == [
        ("c_total", "not exposed by the app")
    ]
    assert _label_problems(['a_total{state="open"}', "sum by (node) (b)"], labels) == [
        ("a_total", "state"),
        ("sum by (node) (b)", "node"),
    ]


@pytest.mark.timeout(900)
def test_every_metric_used_by_alerts_and_dashboard_is_exported(image, running):
    for path in ("/", "/health/ready", "/no-such-route"):
        _get(running + path)  # so the HTTP metrics have samples with their labels
    status, text = _get(running + "/metrics")
    assert status == 200
    families, sample_labels = _exposition(text)
    expressions = _shipped_expressions()
    used = set().union(*(_promql_metrics(e) for e in expressions)) - {"up"}  # Prometheus's own
    assert {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "circuit_breaker_state",
        "backend_up",
        "rate_limit_hits_total",
        "vault_token_renewals_total",
        "cache_hits_total",
    } <= used
    # The running process declares every family the expressions use ...
    missing = []
    for name in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if not {name, base, name.removesuffix("_total")} & families:
            missing.append(name)
    assert not missing, f"used by alerts/dashboard but not exported: {missing}"
    # ... and every metric they use exists with the labels they filter and group on.
    labels = _label_names(image)
    for name, have in sample_labels.items():  # the running process agrees
        assert have <= labels.get(name, set()), name
    assert not _label_problems(expressions, labels)
    assert sample_labels["http_requests_total"] >= {"method", "endpoint", "status"}
