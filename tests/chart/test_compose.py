"""compose.yaml: valid Compose Specification, wired to the app's settings, and the same
stack as k8s/ (images, passwords, Vault bootstrap). Offline: no Docker engine."""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.chart.conftest import ROOT, kubectl

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP = SERVICES["quartstack"]
ENV = APP["environment"]
SCHEMA = json.loads((Path(__file__).parent / "schemas" / "compose-spec.schema.json").read_text())
BACKENDS = ("POSTGRES", "MYSQL", "MONGODB", "RABBITMQ")


def _unescape(text: str) -> str:
    """Compose interpolation: $$ is a literal $ in the container."""
    return text.replace("$$", "$")


def _script(service: dict) -> str:
    return _unescape(service["command"][-1])


@pytest.fixture(scope="module")
def dev_stack() -> list[dict]:
    return [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "k8s")).stdout) if d]


def test_compose_file_matches_the_compose_specification():
    jsonschema.Draft7Validator(SCHEMA).validate(COMPOSE)
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["quartstack"]["depends_on"]["vault-bootstrap"]["condition"] = "done"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["quartstack"]["read_only_root"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


def test_app_environment_names_only_real_settings():
    tree = ast.parse((ROOT / "src" / "quartstack" / "settings.py").read_text())
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    fields = {
        s.target.id.upper()
        for s in settings.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }
    ours = {k for k in ENV if not k.startswith("OTEL_")}  # OTEL_*: the OpenTelemetry SDK's
    assert ours <= fields, ours - fields
    assert not {k for k in ENV if "PASSWORD" in k or k == "VAULT_TOKEN"}  # Vault holds them
    assert set(ENV["REQUIRED_BACKENDS"].split(",")) == {"vault"}


def test_app_reaches_every_backend_by_its_compose_name(dev_stack):
    ports = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in dev_stack
        if d["kind"] == "Service"
    }
    for backend in BACKENDS:
        host, port = ENV[f"{backend}_HOST"], int(ENV[f"{backend}_PORT"])
        assert host in SERVICES, backend
        assert port in ports[host], (backend, port)  # the port the same image serves in k8s/
        assert APP["depends_on"][host] == {"condition": "service_healthy"}
    vault = re.fullmatch(r"http://([\w-]+):(\d+)", ENV["VAULT_ADDR"])
    assert vault, ENV["VAULT_ADDR"]
    listen = SERVICES[vault.group(1)]["environment"]["VAULT_DEV_LISTEN_ADDRESS"]
    assert listen.rsplit(":", 1)[1] == vault.group(2)
    assert ENV["VAULT_MOUNT"] == "secret"
    # Redis Cluster: every node is a service announcing the name the app dials
    create = _script(SERVICES["redis-cluster-create"])
    for entry in ENV["REDIS_NODES"].split(","):
        address = entry.split("=", 1)[1]
        host, port = address.rsplit(":", 1)
        assert SERVICES[host]["hostname"] == host
        assert f"--port {port}" in _script(SERVICES[host])
        assert "--cluster-announce-hostname" in _script(SERVICES[host])
        assert address in create
    assert APP["depends_on"]["redis-cluster-create"] == {
        "condition": "service_completed_successfully"
    }


def test_approle_files_are_the_ones_vault_was_given():
    directory = ENV["VAULT_APPROLE_DIR"]
    mounted = {c["target"]: c["source"] for c in APP["configs"]}
    bootstrap = SERVICES["vault-bootstrap"]
    given = {c["target"]: c["source"] for c in bootstrap["configs"]}
    for name in ("role-id", "secret-id"):
        assert mounted[f"{directory}/{name}"] == given[f"/approle/{name}"]
        assert f"/approle/{name}" in _script(bootstrap)
    assert APP["depends_on"]["vault-bootstrap"] == {"condition": "service_completed_successfully"}


def test_same_stack_as_k8s(dev_stack):
    """Same images, the same Vault bootstrap and the same development credentials."""

    def images(pods):
        return {c["image"] for pod in pods for c in pod["containers"]}

    k8s_pods = [d["spec"]["template"]["spec"] for d in dev_stack if "template" in d.get("spec", {})]
    compose_images = {s["image"] for name, s in SERVICES.items() if name != "quartstack"}
    assert compose_images == images(k8s_pods)
    job = next(
        d for d in dev_stack if d["kind"] == "Job" and d["metadata"]["name"] == "vault-bootstrap"
    )
    k8s_script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]

    def vault_writes(script: str) -> list[str]:
        return [line.strip() for line in script.splitlines() if line.strip().startswith("vault ")]

    # the same steps; k8s/ additionally waits for Vault, compose uses depends_on
    assert vault_writes(_script(SERVICES["vault-bootstrap"])) == [
        w for w in vault_writes(k8s_script) if not w.startswith("vault status")
    ]
    credentials = next(
        d for d in dev_stack if d["kind"] == "Secret" and d["metadata"]["name"] == "dev-credentials"
    )["stringData"]
    env = SERVICES["vault-bootstrap"]["environment"]
    assert {env[k] for k in ("PG_PW", "MYSQL_PW", "MONGO_PW", "RABBIT_PW", "REDIS_PW")} == set(
        credentials.values()
    )
    approle = next(
        d
        for d in dev_stack
        if d["kind"] == "Secret" and d["metadata"]["name"] == "quartstack-approle"
    )["stringData"]
    configs = COMPOSE["configs"]
    assert configs["approle-role-id"]["content"] == approle["role-id"]
    assert configs["approle-secret-id"]["content"] == approle["secret-id"]


def test_app_container_is_hardened_and_its_port_agrees():
    assert APP["user"].split(":")[0] == "10001"  # the image's user, as in the chart
    assert APP["read_only"] is True and "/tmp" in APP["tmpfs"]
    assert APP["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in APP["security_opt"]
    published = {p.split(":")[-1] for p in APP["ports"]}
    assert published == {ENV["PORT"]}
    # the image's CMD has no --bind: it binds HOST:PORT from this environment, the PORT the
    # HEALTHCHECK reads, on every interface so the published port reaches it
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^CMD \["serve"\]$', dockerfile, re.MULTILINE)
    assert "command" not in APP and ENV.get("HOST", "0.0.0.0") == "0.0.0.0"
    target = APP["build"]["target"]
    assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.MULTILINE)
