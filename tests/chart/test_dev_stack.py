"""k8s/ (the dev stack) and skaffold.yaml: valid, and wired to each other and to the chart."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    KUBERNETES_VERSIONS,
    ROOT,
    SCHEMAS,
    find,
    helm,
    kubectl,
    kubernetes_validate,
)

K8S = ROOT / "k8s"
SKAFFOLD_SCHEMA = json.loads((SCHEMAS / "skaffold-v4beta14.schema.json").read_text())
SKAFFOLD = [d for d in yaml.safe_load_all((ROOT / "skaffold.yaml").read_text()) if d]
# What skaffold substitutes into setValueTemplates for a built image.
IMAGE_VARS = {
    "IMAGE_REPO_quartstack": "quartstack",
    "IMAGE_TAG_quartstack": "3f2a9c1",
    "IMAGE_DIGEST_quartstack": "sha256:" + "ab" * 32,
}


@pytest.fixture(scope="module")
def dev_stack() -> list[dict]:
    """k8s/ exactly as skaffold deploys it: through kustomize."""
    output = kubectl("kustomize", str(K8S)).stdout
    return [d for d in yaml.safe_load_all(output) if d]


def _named(documents: list[dict], kind: str, name: str) -> dict:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


# --- k8s/ ----------------------------------------------------------------------------------
def test_dev_stack_is_valid_kubernetes(dev_stack):
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate(dev_stack, version)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    namespace = kustomization["namespace"]
    for document in dev_stack:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace, document["metadata"]
    assert _named(dev_stack, "Namespace", namespace)


def test_dev_stack_has_every_backend(dev_stack):
    services = {d["metadata"]["name"] for d in dev_stack if d["kind"] == "Service"}
    assert {"vault", "postgres", "mysql", "mongodb", "redis-cluster", "rabbitmq"} <= services
    vault = _named(dev_stack, "Deployment", "vault")["spec"]["template"]["spec"]["containers"][0]
    assert "-dev" in vault["args"]
    redis = _named(dev_stack, "StatefulSet", "redis-cluster")
    assert redis["spec"]["replicas"] == 6
    create = _named(dev_stack, "Job", "redis-cluster-create")
    script = create["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--cluster-replicas 1" in script  # 6 nodes: 3 masters with one replica each
    for document in dev_stack:
        pod = document.get("spec", {}).get("template", {}).get("spec")
        for container in (pod or {}).get("containers", []):
            assert container["resources"]["limits"], (document["metadata"]["name"], container)


def test_vault_bootstrap_writes_what_the_app_reads(dev_stack):
    job = _named(dev_stack, "Job", "vault-bootstrap")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert re.search(r"vault auth enable approle", script)
    assert re.search(r"vault secrets enable -path=secret -version=2 kv", script)
    for path, fields in {
        "postgres": ("user", "password", "database"),
        "mysql": ("user", "password", "database"),
        "mongodb": ("user", "password", "database"),
        "rabbitmq": ("user", "password", "vhost"),
        "redis-1": ("password",),
    }.items():
        line = next(x for x in script.splitlines() if f"vault kv put secret/{path} " in x)
        for field in fields:
            assert f"{field}=" in line, (path, field)
    # The chart's existingSecret in the dev values is the one the Job registers in Vault.
    dev_values = yaml.safe_load((CHART / "values-dev.yaml").read_text())
    secret = _named(dev_stack, "Secret", dev_values["vault"]["approle"]["existingSecret"])
    assert set(secret["stringData"]) == {"role-id", "secret-id"}
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "approle", "secret": {"secretName": secret["metadata"]["name"]}} in volumes
    assert "custom-secret-id" in script and "auth/approle/login" in script


def _merge(base: dict, top: dict) -> dict:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_chart_values_point_at_the_dev_stack(dev_stack, profile):
    """The values files each skaffold profile deploys, merged as helm does."""
    release = next(r for name, r in _releases() if name == profile)
    values: dict = {}
    for path in release["valuesFiles"]:
        values = _merge(values, yaml.safe_load((ROOT / path).read_text()))
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in dev_stack
        if d["kind"] == "Service"
    }

    def check(host: str, port: int) -> None:
        parts = host.split(".")
        assert parts[-2:] == [namespace, "svc"], host
        service = parts[-3]
        assert port in services[service], (host, port)
        if len(parts) == 4:  # <pod>.<headless service>.<namespace>.svc
            statefulset = next(
                d for d in dev_stack if d["kind"] == "StatefulSet"
                and d["spec"]["serviceName"] == service
            )  # fmt: skip
            ordinal = int(parts[0].rsplit("-", 1)[1])
            assert parts[0].startswith(statefulset["metadata"]["name"])
            assert ordinal < statefulset["spec"]["replicas"]

    for name, backend in values["backends"].items():
        if backend.get("host"):
            check(backend["host"], backend["port"])
    nodes = [n.split("=", 1)[-1] for n in values["backends"]["redis"]["nodes"].split(",")]
    assert len(nodes) == 3
    for node in nodes:
        host, port = node.rsplit(":", 1)
        check(host, int(port))
    vault = re.fullmatch(r"http://([^:]+):(\d+)", values["vault"]["address"])
    check(vault.group(1), int(vault.group(2)))
    # the dev stack's Vault has no TLS: no CA file that the pod could not find
    assert not values["config"].get("VAULT_CACERT") and not values.get("extraVolumes")


# --- skaffold.yaml ---------------------------------------------------------------------------
def test_skaffold_config_matches_schema():
    assert [d["metadata"]["name"] for d in SKAFFOLD] == ["dev-stack", "quartstack"]
    for document in SKAFFOLD:
        assert document["apiVersion"] == "skaffold/v4beta14"
        jsonschema.validate(document, SKAFFOLD_SCHEMA)
    broken = dict(SKAFFOLD[1], deploy={"helm": {"releases": [{"name": "x", "chartPth": "y"}]}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SKAFFOLD_SCHEMA)


def test_skaffold_deploys_the_dev_stack_before_the_chart():
    stack, app = SKAFFOLD
    assert stack["manifests"]["kustomize"]["paths"] == ["k8s"]
    assert app["requires"] == [{"configs": ["dev-stack"]}]
    artifact = app["build"]["artifacts"][0]
    assert artifact["image"] == "quartstack" and artifact["docker"]["dockerfile"] == "Dockerfile"
    forward = app["portForward"][0]
    assert forward["resourceType"] == "service"
    assert forward["port"] == forward["localPort"] == 8000
    assert {p["name"] for p in app["profiles"]} == {"dev", "prod"}


def _flatten(node, prefix=""):
    """skaffold's setValues semantics: nested maps joined with '.', lists indexed."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _flatten(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def _releases():
    app = SKAFFOLD[1]
    yield "default", app["deploy"]["helm"]["releases"][0]
    for profile in app["profiles"]:
        yield profile["name"], profile["deploy"]["helm"]["releases"][0]


@pytest.mark.parametrize("profile, release", list(_releases()), ids=[n for n, _ in _releases()])
def test_skaffold_releases_render_with_the_built_image(dev_stack, profile, release):
    """Run helm the way skaffold's helm deployer does for each profile, then validate."""
    assert (ROOT / release["chartPath"]).resolve() == CHART
    args = ["template", release["name"], str(CHART), "--namespace", release["namespace"]]
    for path in release.get("valuesFiles", []):
        args += ["-f", str(ROOT / path)]
    for key, template in release["setValueTemplates"].items():
        value = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: IMAGE_VARS[m.group(1)], template)
        args += ["--set", f"{key}={value}"]
    for key, value in _flatten(release.get("setValues", {})):
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    kubernetes_validate([d for d in documents if not d["apiVersion"].startswith("monitoring.")])
    container = find(documents, "Deployment", "quartstack")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["image"] == "quartstack:3f2a9c1@" + IMAGE_VARS["IMAGE_DIGEST_quartstack"]
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    assert release["namespace"] == namespace
    forward = SKAFFOLD[1]["portForward"][0]
    service = find(documents, "Service", "quartstack")
    assert service["metadata"]["name"] == forward["resourceName"]
    assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
    if profile == "dev":
        assert container["args"][-1] == "--reload"
        assert container["securityContext"]["readOnlyRootFilesystem"] is False  # file sync
    else:
        assert "--reload" not in container["args"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_dev_profile_syncs_into_the_dev_image_stage():
    dockerfile = (ROOT / "Dockerfile").read_text()
    profile = next(p for p in SKAFFOLD[1]["profiles"] if p["name"] == "dev")
    patches = {p["path"]: p["value"] for p in profile["patches"] if p["op"] == "add"}
    target = patches["/build/artifacts/0/docker/target"]
    assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.MULTILINE)
    stage = dockerfile.split(f"AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
    copy = re.search(r"^COPY --chown=10001:10001 src (\S+)$", stage, re.MULTILINE)
    assert copy and f"ENV PYTHONPATH={copy.group(1)}" in stage
    rule = patches["/build/artifacts/0/sync"]["manual"][0]
    assert rule["src"].startswith("src/quartstack/")
    # Manual sync keeps the path below the context: src/quartstack/x.py -> <dest>/src/...
    assert f"{rule['dest'].rstrip('/')}/src" == copy.group(1)
    assert "--reload" in stage
    assert dockerfile.rstrip().splitlines()[-1].startswith("FROM runtime AS release")
